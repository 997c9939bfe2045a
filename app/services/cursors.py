"""List cursors: a position in a list (`Keyset`), signed and bound to what it may continue.

A cursor is `base64url(json position) . base64url(HMAC-SHA256)`, truncated to 128 bits. The
HMAC covers the position and its scope: the organization, the list (`"deals"`,
`"activities:<deal id>"`, ...) and the list's filters and sort order. A cursor therefore
continues only the listing that issued it: replayed with other filters, another sort, in
another organization or altered in any byte, it is refused (422 `INVALID_CURSOR`), never read.
The key is derived from the deployment's signing key (`TokenCodec.derived_key`).

The position is signed, not encrypted: it holds the last row's sort value and id, which the
client has just been sent anyway. Clients must treat a cursor as opaque."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.core.errors import InvalidCursor
from app.repositories.cursor import Keyset

_SIGNATURE_BYTES = 16
MAX_CURSOR_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class CursorScope:
    """What a cursor may continue: one organization's list with these filters and sort.
    `filters` is a frozen dataclass (its `repr` names every field, the sort included)."""

    organization_id: int
    list_name: str
    filters: object = None

    def digest(self) -> bytes:
        text = f"{self.organization_id}\x1f{self.list_name}\x1f{self.filters!r}"
        return hashlib.sha256(text.encode()).digest()


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, position: Keyset, scope: CursorScope) -> str:
        body = json.dumps([*_typed(position.value), position.id], separators=(",", ":"))
        payload = _b64(body.encode())
        return f"{payload}.{_b64(self._sign(payload, scope))}"

    def open(self, cursor: str, scope: CursorScope) -> Keyset:
        """The position `cursor` holds, if this codec issued it for `scope`; else InvalidCursor."""
        payload, dot, signature = cursor.partition(".")
        if not dot or len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursor()
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise InvalidCursor() from None
        if not hmac.compare_digest(given, self._sign(payload, scope)):
            raise InvalidCursor()
        try:  # signed by us: malformed only if the format changed since it was issued
            tag, raw, row_id = json.loads(_unb64(payload))
            return Keyset(_untyped(tag, raw), _row_id(row_id))
        except (ValueError, TypeError, InvalidOperation, binascii.Error):
            raise InvalidCursor() from None

    def _sign(self, payload: str, scope: CursorScope) -> bytes:
        message = scope.digest() + payload.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _typed(value: Any) -> tuple[str, Any]:
    # datetime before date: a datetime is a date too.
    if value is None:
        return "n", None
    if isinstance(value, datetime):
        return "t", value.isoformat()
    if isinstance(value, date):
        return "d", value.isoformat()
    if isinstance(value, Decimal):
        return "m", str(value)
    if isinstance(value, str):
        return "s", value
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def _untyped(tag: Any, raw: Any) -> Any:
    if tag == "n" and raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("not a cursor value")
    if tag == "t":
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("naive datetime in a cursor")
        return moment
    if tag == "d":
        return date.fromisoformat(raw)
    if tag == "m":
        return Decimal(raw)
    if tag == "s":
        return raw
    raise ValueError("unknown cursor value type")


def _row_id(raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValueError("not a row id")
    return raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Canonical base64url only: another spelling of the same bytes (a changed padding bit,
    a stray character) is refused, so a cursor cannot be altered and still accepted."""
    if not text.isascii():
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data
