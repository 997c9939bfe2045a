"""The events table: appended at commit, read by organization and id, pruned by age.

`append` runs inside the commit (from `app.services.events`'s `before_commit` hook), where
SQLAlchemy's asyncio layer runs event handlers synchronously: it takes the plain `Session`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, delete, func, insert, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.db.types import utcnow
from app.models import Event, EventPruneMark

events = cast(Table, Event.__table__)
marks = cast(Table, EventPruneMark.__table__)


# PostgreSQL: each event inserted with a placeholder id, negative (drawn from the events'
# sequence), which the commit-time trigger replaces; only such rows are renumbered.
_PLACEHOLDER_INSERT = insert(events).values(id=-func.nextval("events_id_seq"))


def append(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (events of this transaction), grouped by organization.

    On PostgreSQL the ids they get here are placeholders (negative): inside COMMIT a deferred
    trigger (migration 0014) takes each organization's advisory lock and numbers its events again
    from the sequence, so ids within an organization are in commit order (see
    `app.services.events`). Grouped by organization, the locks are taken in organization
    order, and two transactions writing to several organizations cannot deadlock. SQLite
    serialises writers already (BEGIN IMMEDIATE)."""
    ordered = sorted(rows, key=lambda row: int(row["organization_id"]))
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_PLACEHOLDER_INSERT, ordered)
    else:
        connection.execute(insert(events), ordered)


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
