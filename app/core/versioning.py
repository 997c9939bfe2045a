"""Versions of stored records, for writes that must not overwrite a change they have not seen.

A version names one state of a record: `version_of(id, updated_at)`. `updated_at` is set by
every UPDATE of a contact, deal or task (`onupdate`), and a write that changes nothing sends
no UPDATE, so the version changes exactly when the record does. It is a digest rather than
the timestamp itself so that clients treat it as opaque (the HTTP layer sends it as the
`ETag`).

A representation that also shows figures derived from other records (a company's counts of
contacts and open deals) names them too (`derived`), so that its version changes with them: an
`If-None-Match` never answers 304 for counts that have moved, and an `If-Match` write is
checked against what the client saw.

`ExpectedVersion` is the HTTP-free form of `If-Match`: a service checks it against the row it
has locked for the write, so of two writers holding the same version exactly one succeeds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from app.core.errors import PreconditionFailed


def version_of(record_id: int, updated_at: datetime, *derived: int) -> str:
    key = ":".join([str(record_id), updated_at.isoformat(), *map(str, derived)]).encode()
    return hashlib.blake2b(key, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class ExpectedVersion:
    """The versions a write may proceed on; `versions=None` means any (the record must only
    exist, `If-Match: *`)."""

    versions: frozenset[str] | None

    def ensure_matches(self, record_id: int, updated_at: datetime, *derived: int) -> None:
        """Raises `PreconditionFailed` (412) when the record is in none of these versions."""
        if self.versions is None:
            return
        if version_of(record_id, updated_at, *derived) not in self.versions:
            raise PreconditionFailed()


def ensure_version(
    expected: ExpectedVersion | None, record_id: int, updated_at: datetime, *derived: int
) -> None:
    if expected is not None:
        expected.ensure_matches(record_id, updated_at, *derived)
