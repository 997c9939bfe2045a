"""Conditional requests (RFC 9110 §8.8.3, §13): `ETag`, `If-None-Match`, `If-Match`.

A single contact, deal or task is answered with a strong `ETag`, the quoted version of the
record (`app.core.versioning`): `GET` and `PATCH` set it with `send_etag`. Everything else is
here, once:

- `If-None-Match` on `GET`/`HEAD` is evaluated by the route class (`not_modified`) for any
  200 answer that carries an `ETag`: a match (weak comparison, `*`, or any tag of a list)
  answers 304 with the `ETag` and no body. The representation is not cached, so a 304 saves
  the transfer, not the read.
- `If-Match` on `PATCH`/`DELETE` becomes an `ExpectedVersion` (`IfMatch` dependency) that the
  service checks against the row it holds locked for the write: 412 `PRECONDITION_FAILED` and
  nothing changes when it does not match. `*` matches any existing record; weak tags never
  match (strong comparison). A missing record is 404 whatever `If-Match` says, so another
  organization's ids stay unknown.

A header that is not `*` or a list of entity-tags is 422, like any other malformed header."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError

from app.core.versioning import ExpectedVersion, version_of

_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_SEPARATORS = " \t,"


class Versioned(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def updated_at(self) -> datetime: ...


def etag_of(record: Versioned, *derived: int) -> str:
    return f'"{version_of(record.id, record.updated_at, *derived)}"'


def send_etag(response: Response, record: Versioned, *derived: int) -> None:
    """`derived`: figures the answer shows that come from other records (see
    `app.core.versioning`)."""
    response.headers["ETag"] = etag_of(record, *derived)


class EntityTags:
    """A parsed `If-Match`/`If-None-Match`: `*`, or (weak?, opaque-tag) pairs."""

    __slots__ = ("any", "tags")

    def __init__(self, any_: bool, tags: tuple[tuple[bool, str], ...]) -> None:
        self.any = any_
        self.tags = tags

    @classmethod
    def parse(cls, values: list[str], header: str) -> EntityTags:
        """Every line of the header field, as one list; 422 for anything else than `*` or a
        comma-separated list of entity-tags (`"abc"`, `W/"abc"`)."""
        value = ", ".join(values).strip(_SEPARATORS)
        if value == "*":
            return cls(True, ())
        tags: list[tuple[bool, str]] = []
        position, end = 0, len(value)
        while True:
            # Empty list elements (`"a", , "b"`) are allowed (RFC 9110 §5.6.1).
            while position < end and value[position] in _SEPARATORS:
                position += 1
            if position == end:
                break
            match = _TAG.match(value, position)
            if match is None:
                raise _malformed(header)
            tags.append((match.group(1) is not None, match.group(2)))
            position = match.end()
            while position < end and value[position] in " \t":
                position += 1
            if position < end and value[position] != ",":
                raise _malformed(header)
        if not tags:
            raise _malformed(header)
        return cls(False, tuple(tags))

    def weakly_matches(self, etag: str) -> bool:
        return self.any or any(f'"{opaque}"' == etag for _, opaque in self.tags)

    def expected_version(self) -> ExpectedVersion:
        if self.any:
            return ExpectedVersion(None)
        return ExpectedVersion(frozenset(opaque for weak, opaque in self.tags if not weak))


def _malformed(header: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "loc": ("header", header),
                "msg": f'{header} must be "*" or a comma-separated list of quoted entity-tags',
                "type": "value_error",
            }
        ]
    )


async def if_match(
    request: Request,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='Only change the resource if its `ETag` is one of these (or `"*"`); '
            "else 412 `PRECONDITION_FAILED` and nothing changes.",
        ),
    ] = None,
) -> ExpectedVersion | None:
    if if_match is None:
        return None
    return EntityTags.parse(request.headers.getlist("if-match"), "If-Match").expected_version()


IfMatch = Annotated[ExpectedVersion | None, Depends(if_match)]


def not_modified(request: Request, response: Response) -> Response:
    """`response`, or a 304 for it when the request's `If-None-Match` matches its `ETag`."""
    etag = response.headers.get("etag")
    if etag is None or response.status_code != 200:
        return response
    values = request.headers.getlist("if-none-match")
    if not values or not EntityTags.parse(values, "If-None-Match").weakly_matches(etag):
        return response
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("content-type", "content-length")
    }
    return Response(status_code=304, headers=headers)
