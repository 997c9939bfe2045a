"""Queries on kept Idempotency-Key answers. Not a tenant repository: a record is scoped by
the credential and organization inside its own key (`IdempotencyScope`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import IdempotencyKey

_keys = cast(Table, IdempotencyKey.__table__)
_INSERT: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True, slots=True)
class IdempotencyScope:
    credential: str
    organization_id: int
    method: str
    path: str
    key: str

    def lock_id(self) -> int:
        """A signed 64-bit number for PostgreSQL's advisory locks."""
        digest = hashlib.sha256(
            "\x00".join(
                (self.credential, str(self.organization_id), self.method, self.path, self.key)
            ).encode()
        ).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    request_hash: str
    status_code: int
    content_type: str
    body: bytes


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def try_lock(self, scope: IdempotencyScope) -> bool:
        """Take the key for this transaction; False if another transaction holds it.

        PostgreSQL: a transaction-level advisory lock, released at commit or rollback, in every
        worker and instance on the database. SQLite runs one writing transaction at a time
        (`BEGIN IMMEDIATE`): holding the write lock already excludes every other request."""
        if self.session.get_bind().dialect.name != "postgresql":
            return True
        locked = await self.session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": scope.lock_id()}
        )
        return bool(locked)

    async def lock_and_find(
        self, scope: IdempotencyScope, now: datetime
    ) -> tuple[bool, KeptAnswer | None]:
        """`try_lock` and `find` in one round trip on PostgreSQL.

        The statement's snapshot is taken before the lock: a request holding the key that
        commits in between is not seen, and this one runs too. Its answer then collides with
        the other's on the unique key when it is added (`add` raises `IntegrityError`), and
        the caller rolls back: nothing is done twice."""
        if self.session.get_bind().dialect.name != "postgresql":
            return True, await self.find(scope, now)
        row = (
            await self.session.execute(
                _LOCK_AND_FIND, {"lock_id": scope.lock_id(), **_scope(scope)}
            )
        ).one()
        if not row.locked:
            return False, None
        if row.request_hash is None:
            return True, None
        if row.expires_at <= now:
            await self.session.execute(delete(_keys).where(*self._where(scope)))
            return True, None
        return True, KeptAnswer(row.request_hash, row.status_code, row.content_type, row.body)

    def _where(self, scope: IdempotencyScope) -> list[Any]:
        return [
            _keys.c.credential == scope.credential,
            _keys.c.organization_id == scope.organization_id,
            _keys.c.method == scope.method,
            _keys.c.path == scope.path,
            _keys.c.key == scope.key,
        ]

    async def find(self, scope: IdempotencyScope, now: datetime) -> KeptAnswer | None:
        """The answer kept under `scope`, unless it has expired (an expired one is deleted, so
        the key starts afresh)."""
        row = (
            await self.session.execute(
                select(
                    _keys.c.request_hash,
                    _keys.c.status_code,
                    _keys.c.content_type,
                    _keys.c.body,
                    _keys.c.expires_at,
                ).where(*self._where(scope))
            )
        ).first()
        if row is None:
            return None
        if row.expires_at <= now:
            await self.session.execute(delete(_keys).where(*self._where(scope)))
            return None
        return KeptAnswer(row.request_hash, row.status_code, row.content_type, row.body)

    async def add(
        self, scope: IdempotencyScope, answer: KeptAnswer, now: datetime, expires_at: datetime
    ) -> None:
        """Keep `answer` in this transaction (one statement built once, its values as
        parameters: no ORM flush, no statement construction or cache key per request)."""
        await self.session.execute(_ADD, _values(scope, answer, now, expires_at))

    async def add_if_absent(
        self, scope: IdempotencyScope, answer: KeptAnswer, now: datetime, expires_at: datetime
    ) -> None:
        """Keep `answer` unless another request's answer was kept under `scope` meanwhile."""
        insert = _INSERT[self.session.get_bind().dialect.name](_keys).values(
            **_values(scope, answer, now, expires_at)
        )
        await self.session.execute(insert.on_conflict_do_nothing())

    async def delete_expired(self, now: datetime, limit: int | None = None) -> int:
        """Delete expired answers (at most `limit` of them, oldest first); how many."""
        expired = select(_keys.c.id).where(_keys.c.expires_at <= now)
        if limit is not None:
            # Skips rows another transaction is deleting (PostgreSQL) instead of waiting.
            expired = (
                expired.order_by(_keys.c.expires_at).limit(limit).with_for_update(skip_locked=True)
            )
        result = await self.session.execute(delete(_keys).where(_keys.c.id.in_(expired)))
        return int(getattr(result, "rowcount", 0) or 0)

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(_keys)) or 0)


_LOCK_AND_FIND = text(
    "SELECT pg_try_advisory_xact_lock(:lock_id) AS locked, k.request_hash, k.status_code, "
    "k.content_type, k.body, k.expires_at "
    "FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS k "
    "ON k.credential = :credential AND k.organization_id = :organization_id "
    "AND k.method = :method AND k.path = :path AND k.key = :key"
)


_ADD = insert(_keys)


def _scope(scope: IdempotencyScope) -> dict[str, Any]:
    return {
        "credential": scope.credential,
        "organization_id": scope.organization_id,
        "method": scope.method,
        "path": scope.path,
        "key": scope.key,
    }


def _values(
    scope: IdempotencyScope, answer: KeptAnswer, now: datetime, expires_at: datetime
) -> dict[str, Any]:
    return {
        **_scope(scope),
        "request_hash": answer.request_hash,
        "status_code": answer.status_code,
        "content_type": answer.content_type,
        "body": answer.body,
        "created_at": now,
        "expires_at": expires_at,
    }
