"""The events table: appended at commit, read by organization and id, pruned by age.

`append` runs inside the commit (from `app.services.events`'s `before_commit` hook), where
SQLAlchemy's asyncio layer runs event handlers synchronously: it takes the plain `Session`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, delete, func, insert, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.db.types import utcnow
from app.models import Event, EventPruneMark

events = cast(Table, Event.__table__)
marks = cast(Table, EventPruneMark.__table__)

# The first key of the two-key form of PostgreSQL's advisory locks ("EVNT"), the second is the
# organization: one lock per organization, apart from the one-key locks of idempotency.
_LOCK_NAMESPACE = 0x45564E54
_INT4 = 2**32


def _int4(value: int) -> int:
    """`value` folded into a signed 32-bit integer (two organizations may share a lock,
    which only makes them wait for each other)."""
    folded = value % _INT4
    return folded - _INT4 if folded >= 2**31 else folded


_COLUMNS = ("organization_id", "type", "occurred_at", "actor_type", "actor_id", "data")


# One statement, built once: the organization's advisory lock (a materialized CTE, taken
# before the row is produced, so before its id is drawn), then the insert of one event. Run
# for several rows at once (executemany), each takes the lock again (it is already held).
_LOCKED = (
    select(func.pg_advisory_xact_lock(bindparam("lock_namespace"), bindparam("lock_key")))
    .cte("locked")
    .prefix_with("MATERIALIZED")
)
_LOCKED_INSERT = insert(events).from_select(
    list(_COLUMNS),
    select(*(bindparam(name, type_=events.c[name].type) for name in _COLUMNS)).select_from(_LOCKED),
)


_LOCK = select(func.pg_advisory_xact_lock(bindparam("lock_namespace"), bindparam("lock_key")))
_INSERT = insert(events)
# From this many events of one organization in one transaction, `append` takes the lock on its
# own, once, and then inserts them.
BULK_EVENTS = 32


def append(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (events of this transaction) as its last statements.

    On PostgreSQL each organization's advisory lock is taken first and held until the
    transaction ends, so no other transaction allocates an event id in that organization
    between this insert and this commit: ids within an organization are in commit order.
    The lock is taken by the insert itself (one round trip, then COMMIT): the lock is held
    while the app waits for one answer, not two, which is what bounds one organization's
    writes per second. Locks are taken in organization order (a transaction of several
    organizations cannot deadlock with another). SQLite serialises writers already (BEGIN
    IMMEDIATE)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(insert(events), list(rows))
        return
    for organization_id in sorted({row["organization_id"] for row in rows}):
        lock = {"lock_namespace": _LOCK_NAMESPACE, "lock_key": _int4(organization_id)}
        mine = [row for row in rows if row["organization_id"] == organization_id]
        if len(mine) < BULK_EVENTS:
            connection.execute(_LOCKED_INSERT, [{**row, **lock} for row in mine])
            continue
        # Many events (an import's batch): the lock once, then a plain INSERT of them all
        # (one statement, sent for every row in one pipelined exchange), instead of a
        # statement per event that each takes the lock again.
        connection.execute(_LOCK, lock)
        connection.execute(_INSERT, mine)


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """Exact types and `prefix.*` patterns; empty both: every type."""

    exact: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()

    def matches(self, type_: str) -> bool:
        """The same test as `clause`, in Python (webhook endpoints' patterns)."""
        if not self.exact and not self.prefixes:
            return True
        return type_ in self.exact or type_.partition(".")[0] in self.prefixes

    def clause(self) -> Any:
        if not self.exact and not self.prefixes:
            return true()
        matches: list[Any] = []
        if self.exact:
            matches.append(events.c.type.in_(sorted(self.exact)))
        matches.extend(events.c.type.startswith(f"{p}.") for p in sorted(self.prefixes))
        return or_(*matches)


@dataclass(frozen=True, slots=True)
class FeedWindow:
    rows: Sequence[Row[Any]]
    # The highest event id of the organization in the snapshot the rows were read from.
    head: int | None
    pruned_through: int | None


class EventRepository:
    def __init__(self, session: AsyncSession, organization_id: int) -> None:
        self.session = session
        self.organization_id = organization_id

    async def window(self, after: int, types: TypeFilter, limit: int) -> FeedWindow:
        """Up to `limit` events after `after`, oldest first, with the organization's newest
        event id and its prune mark — all in one statement, hence one snapshot (the read
        engine runs each statement on its own on PostgreSQL)."""
        org = self.organization_id
        page = (
            select(
                events.c.id,
                events.c.type,
                events.c.occurred_at,
                events.c.actor_type,
                events.c.actor_id,
                events.c.data,
            )
            .where(events.c.organization_id == org, events.c.id > after, types.clause())
            .order_by(events.c.id)
            .limit(limit)
            .subquery("page")
        )
        head = (
            select(func.max(events.c.id).label("head"))
            .where(events.c.organization_id == org)
            .subquery("head")
        )
        pruned = (
            select(marks.c.pruned_through_id)
            .where(marks.c.organization_id == org)
            .scalar_subquery()
            .label("pruned_through")
        )
        statement = (
            select(head.c.head, pruned, *page.c)
            .select_from(head.outerjoin(page, true()))
            .order_by(page.c.id)
        )
        result = (await self.session.execute(statement)).all()
        first = result[0]  # the head's one row, joined to no page row when there is none
        rows = [row for row in result if row.id is not None]
        return FeedWindow(rows, first.head, first.pruned_through)


async def prune(session: AsyncSession, older_than: datetime) -> int:
    """Delete every organization's events that occurred before `older_than`, and remember
    per organization the highest id deleted (`EventPruneMark`): everything up to it is gone.
    The boundary is an id, not a time, so "before the mark" is exact for cursors."""
    boundaries = (
        await session.execute(
            select(events.c.organization_id, func.max(events.c.id))
            .where(events.c.occurred_at < older_than)
            .group_by(events.c.organization_id)
        )
    ).all()
    deleted = 0
    now = utcnow()
    for organization_id, through in boundaries:
        result = await session.execute(
            delete(events).where(
                events.c.organization_id == organization_id, events.c.id <= through
            )
        )
        deleted += int(getattr(result, "rowcount", 0) or 0)
        await _raise_mark(session, organization_id, through, now)
    return deleted


async def _raise_mark(
    session: AsyncSession, organization_id: int, through: int, now: datetime
) -> None:
    # Only ever raised: every event up to the previous mark is already gone, so `through`
    # (the highest id deleted now) is above it.
    updated = await session.execute(
        marks.update()
        .where(marks.c.organization_id == organization_id)
        .values(pruned_through_id=through, pruned_at=now)
    )
    if not getattr(updated, "rowcount", 0):
        await session.execute(
            insert(marks).values(
                organization_id=organization_id, pruned_through_id=through, pruned_at=now
            )
        )
