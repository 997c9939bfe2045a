"""Events: every committed change of a company, contact, deal, task, comment or membership,
written in the transaction that makes it (a transactional outbox), and read back by the change
feed.

**Writing.** A service calls `record` (or `record_update`) after its change; the event is
rendered then (the resource exactly as its GET answers it) and kept on the session. The
session's commit writes the kept events as its last statements (`before_commit`, below); a
rollback drops them. So a committed change always has its event and a rolled-back one never
does. A guard refuses the commit of a transaction that changed a company, contact, deal, task,
comment or membership without recording an event of that kind (`EventNotRecorded`), so a new write
path cannot forget the call; bulk history (demo data) says so with `backfill`.

**Commit order.** Ids come from one sequence, but a sequence alone hands them out in the order
transactions *insert*, not the order they *commit*: a reader could pass id 12 (committed) while
id 11 is still open, then never see 11. So on PostgreSQL an event's id is drawn at commit: the
insert (`app.repositories.events.append`) gives it a placeholder, and a deferred constraint
trigger (migration 0014), which runs inside COMMIT, takes the organization's advisory lock
(`pg_advisory_xact_lock`, held to the end of the transaction) and numbers the event again
from the sequence. While one transaction holds the lock, no other draws an id in that
organization, and PostgreSQL releases it only after the commit is visible. Hence, per
organization: ids are in commit order, and every event not yet visible to a reader has an id
above every event it can see. The feed (and the webhook delivery reading the same table) can
therefore keep a plain "last id seen" position and never skip or repeat one. The lock is held
from the numbering to the end of the commit, all inside the server (no answer travels to the
app and back while it is held): it serialises only the commits of one organization's writes,
for as long as a commit takes. On SQLite, writers are serialised whole by BEGIN IMMEDIATE,
which gives the same order without a lock.

The sequence must not be cached per session (`CACHE 1`, PostgreSQL's default), or ids would
stop following the lock order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy import Row
from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from app.core.errors import CursorExpired
from app.core.tenancy import TenantContext
from app.db.types import utcnow
from app.models import (
    Activity,
    ActivityType,
    Company,
    Contact,
    CustomFieldDefinition,
    Deal,
    Membership,
    Pipeline,
    PipelineStage,
    Task,
)
from app.repositories import events as event_rows
from app.repositories.events import EventRepository, TypeFilter
from app.schemas.event import EventType, split_type_patterns

# Fields whose change is a consequence of any change, not one in itself.
_NOT_CHANGES = frozenset({"updated_at"})
_PENDING = "pending_events"


def actor_of(ctx: TenantContext) -> dict[str, Any]:
    """Who made a change, as events name them: a person, or an API key
    (`TenantContext.actor`; records a key creates are owned by its creator)."""
    return dict(ctx.actor)


def record(
    session: AsyncSession,
    ctx: TenantContext,
    type_: EventType,
    resource: BaseModel,
    changes: Mapping[str, tuple[Any, Any]] | None = None,
) -> None:
    """Append a `type_` event about `resource` (its read schema, as its GET answers it) to
    this transaction: written when it commits, dropped if it rolls back."""
    data = b'{"object":' + resource.__pydantic_serializer__.to_json(resource)
    if changes:
        data += b',"changes":' + to_json({field: list(pair) for field, pair in changes.items()})
    actor = actor_of(ctx)
    session.info.setdefault(_RECORDED, set()).add(type_.value.partition(".")[0])
    _keep(session, ctx.organization_id, type_, actor["type"], actor["id"], data + b"}")


# Who acts when the service itself makes a change (a worker disabling a webhook endpoint).
SYSTEM_ACTOR_TYPE = "system"


def record_system(
    session: AsyncSession, organization_id: int, type_: EventType, resource: BaseModel
) -> None:
    """Append a `type_` event made by the service itself (actor `{"type": "system", "id": 0}`),
    not by a request: written when this transaction commits, like `record`'s."""
    data = b'{"object":' + resource.__pydantic_serializer__.to_json(resource) + b"}"
    _keep(session, organization_id, type_, SYSTEM_ACTOR_TYPE, 0, data)


def _keep(
    session: AsyncSession,
    organization_id: int,
    type_: EventType,
    actor_type: str,
    actor_id: int,
    data: bytes,
) -> None:
    pending: list[dict[str, Any]] = session.info.setdefault(_PENDING, [])
    pending.append(
        {
            "organization_id": organization_id,
            "type": type_.value,
            "occurred_at": utcnow(),
            "actor_type": actor_type,
            "actor_id": actor_id,
            "data": data.decode(),
        }
    )


def record_update(
    session: AsyncSession,
    ctx: TenantContext,
    type_: EventType,
    before: BaseModel,
    after: BaseModel,
) -> bool:
    """Append a `type_` event with the fields that differ between `before` and `after` (as
    the API renders them); nothing when none does. Whether an event was recorded."""
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    changes = {
        field: (old.get(field), value)
        for field, value in new.items()
        if field not in _NOT_CHANGES and old.get(field) != value
    }
    if not changes:
        return False
    record(session, ctx, type_, after, changes)
    return True


def has_pending(session: AsyncSession) -> bool:
    return bool(session.info.get(_PENDING))


def backfill(session: AsyncSession) -> None:
    """Declare that this transaction writes history in bulk (demo data, test fixtures), not
    changes happening now: its rows need no events (the guard below lets it commit)."""
    session.info[_BACKFILL] = True


def changed_in_bulk(session: AsyncSession, kind: str) -> None:
    """Declare that this transaction changes records of `kind` in bulk as the consequence of a
    change whose own event says so (deleting a custom field removes its values from every
    record: `custom_field.deleted`), so those records need no event each."""
    _recorded(session).add(kind)


def founding(session: AsyncSession) -> None:
    """Declare that this transaction founds an organization, whose default pipeline is part of
    it: like the organization itself it has no event (the founding's is `member.added`)."""
    _recorded(session).add("pipeline")


def only_in_trash(session: AsyncSession, kind: str) -> None:
    """Declare that the records of `kind` this transaction changed without an event are in
    the trash (deals moved off a deleted stage): a record has no events while it is there;
    restoring it sends it whole."""
    _recorded(session).add(kind)


def _recorded(session: AsyncSession) -> set[str]:
    recorded: set[str] = session.info.setdefault(_RECORDED, set())
    return recorded


def purging(session: AsyncSession) -> None:
    """Declare that this transaction purges trashed records for good (`app.services.trash`):
    their `*.deleted` event was written when they went to the trash, and a purge has none."""
    session.info[_BACKFILL] = True


def write_pending(session: Session) -> None:
    """Write this transaction's recorded events now (the commit does it: see the module).
    Public for tests that hold a transaction open right after its events are written."""
    session.flush()  # the changes first: nothing waits on a row lock once the lock is held
    _refuse_unrecorded(session)
    pending: list[dict[str, Any]] | None = session.info.pop(_PENDING, None)
    if pending:
        event_rows.append(session, pending)


@orm_event.listens_for(Session, "before_commit")
def _write_on_commit(session: Session) -> None:
    write_pending(session)


@orm_event.listens_for(Session, "after_transaction_end")
def _drop_on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the whole transaction, not a savepoint
        for key in (_PENDING, _RECORDED, _CHANGED, _BACKFILL):
            session.info.pop(key, None)


# --- the guard: no change of a tracked resource commits without an event of its kind ---------


class EventNotRecorded(RuntimeError):
    """A transaction changed companies, contacts, deals, tasks, comments or members without
    recording an event of that kind: a programming error (answered as a 500), caught by the
    first test of the new write path."""


_CHANGED = "event_kinds_changed"
_RECORDED = "event_kinds_recorded"
_BACKFILL = "events_backfill"
_KIND_OF_TABLE = {
    Company.__tablename__: "company",
    CustomFieldDefinition.__tablename__: "custom_field",
    Contact.__tablename__: "contact",
    Deal.__tablename__: "deal",
    Task.__tablename__: "task",
    Membership.__tablename__: "member",
    Pipeline.__tablename__: "pipeline",
    PipelineStage.__tablename__: "pipeline",
}


def _kind(instance: object, *, created: bool) -> str | None:
    table = getattr(instance, "__tablename__", None)
    if isinstance(instance, Activity):  # only a new comment is an event of its own
        return "comment" if created and instance.type is ActivityType.COMMENT else None
    return _KIND_OF_TABLE.get(table) if isinstance(table, str) else None


def _changed(session: Session) -> set[str]:
    changed: set[str] = session.info.setdefault(_CHANGED, set())
    return changed


@orm_event.listens_for(Session, "before_flush")
def _note_changed_rows(session: Session, _: UOWTransaction, __: object) -> None:
    for instance in session.new:
        if kind := _kind(instance, created=True):
            _changed(session).add(kind)
    for instance in session.deleted:
        if kind := _kind(instance, created=False):
            _changed(session).add(kind)
    for instance in session.dirty:
        # `dirty` holds anything assigned to, even the value it had: only a net change counts.
        kind = _kind(instance, created=False)
        if kind and session.is_modified(instance, include_collections=False):
            _changed(session).add(kind)


@orm_event.listens_for(Session, "do_orm_execute")
def _note_bulk_statements(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(getattr(state.statement, "table", None), "name", None)
        kind = _KIND_OF_TABLE.get(table) if isinstance(table, str) else None
        if kind is not None:
            _changed(state.session).add(kind)


def _refuse_unrecorded(session: Session) -> None:
    missing = session.info.get(_CHANGED, set()) - session.info.get(_RECORDED, set())
    if missing and not session.info.get(_BACKFILL):
        raise EventNotRecorded(
            f"{', '.join(sorted(missing))} changed without an event "
            "(call app.services.events.record in the writing transaction)"
        )


# --- the feed ---------------------------------------------------------------------------------


def type_filter(patterns: str | None) -> TypeFilter:
    if patterns is None:
        return TypeFilter()
    parts = split_type_patterns(patterns)
    if "*" in parts:
        return TypeFilter()
    prefixes = frozenset(p[:-2] for p in parts if p.endswith(".*"))
    exact = frozenset(p for p in parts if not p.endswith(".*") and p.split(".")[0] not in prefixes)
    return TypeFilter(exact, prefixes)


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: Sequence[Row[Any]]
    # Where the next read starts: the last event returned, or at the end, the organization's
    # newest event (later events all have higher ids; see the module).
    position: int


class EventFeed:
    def __init__(self, session: AsyncSession, ctx: TenantContext) -> None:
        self.ctx = ctx
        self.events = EventRepository(session, ctx.organization_id)

    async def read(self, after: int | None, types: TypeFilter, limit: int) -> FeedPage:
        """Events after position `after` (None: from the oldest retained), oldest first.

        A position before the organization's prune mark → `CursorExpired`: events after it
        were deleted, and reading on would skip them silently."""
        start = after or 0
        window = await self.events.window(start, types, limit)
        if (
            after is not None
            and window.pruned_through is not None
            and after < window.pruned_through
        ):
            raise CursorExpired()
        rows = window.rows
        if len(rows) == limit:
            return FeedPage(rows, rows[-1].id)
        # Fewer than asked: every event visible in this snapshot was read, so the position
        # moves to the newest one (past events the type filter left out), and never stays
        # before the prune mark (a feed pruned empty answers a cursor that stays valid).
        return FeedPage(rows, max(start, window.head or 0, window.pruned_through or 0))


def event_json(organization_id: int, row: Row[Any]) -> bytes:
    """One event as the feed and webhook deliveries send it (`EventRead`'s shape), composed
    from the stored, already rendered `data`."""
    return _EVENT_JSON % (
        row.id,
        to_json(row.type),
        to_json(row.occurred_at),
        organization_id,
        to_json(row.actor_type),
        row.actor_id,
        row.data.encode(),
    )


_EVENT_JSON = (
    b'{"id":%d,"type":%b,"occurred_at":%b,"organization_id":%d,'
    b'"actor":{"type":%b,"id":%d},"data":%b}'
)


async def prune(session: AsyncSession, retention_days: int, now: datetime | None = None) -> int:
    """Delete events older than the retention period; how many were deleted."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    return await event_rows.prune(session, cutoff)
