"""Cached read models of an organization, and when they stop being served: all in this file.

What is cached (per organization, in the cache of `app.core.cache`: in-process, or Redis
when `REDIS_URL` is set), each entry under the data version it was computed from:

| read model                        | key                                      | version  |
|-----------------------------------|------------------------------------------|----------|
| analytics summary                 | `summary:{pipeline}:{days}:{currency or *}` | analytics |
| analytics funnel                  | `funnel:{pipeline}:{currency or *}`      | analytics |
| exact `total` of a deal list      | `deals:count:` + the filters (no order)  | deals    |
| where a deal list page begins     | `deals:page:` + filters, order, size, page | deals  |
| exact `total` of a contact list   | `contacts:count:` + search, owner, company | contacts |

**Data versions** live in the database and move in the same transaction as the data:

- deals: the sum of the organization's `deal_stats.version`. Every deal write moves the
  running total its deal is counted in (`deal_written`), even a write that leaves every
  total as it was (a new title, owner or contact changes list totals and page starts);
- contacts: `organizations.contacts_version`, moved by `contacts_written`;
- analytics: the deals' version plus `organizations.pipelines_version`, which every change of
  a pipeline or stage moves (`pipelines_written`): a rename, a new probability, a reorder, a
  new default. `{pipeline}` in their keys is the pipeline's id, or `default` when none was
  named (which pipeline that is moves the version too).

A reader reads the version *first*, then computes: what it stores is at least as fresh as the
version it is stored under (analytics read it in the statement that checks membership,
`AnalyticsService.open`, so a cached result costs one round trip). An entry is served only to
a reader that read the same version.
So after a committed write nothing older is ever served, in any worker or instance, whatever
happened to invalidation (Redis down, another process's memory never told).

**Dropping entries** only frees space: once a deal write has committed, the organization's
entries are dropped (`Cache.invalidate`, after the commit, never before it, so a reader cannot
re-store the old figures under the new version). A contact write only moves its version: its
stale totals are never served and expire with the TTL (`ANALYTICS_CACHE_TTL`), and the
organization's analytics stay cached. Redis also starts an organization over past
10,000 entries.

**Writes.** A write of a deal or contact calls `deal_written` / `contacts_written` in its
transaction, and only if it changed something: a PATCH that sends the current values writes
nothing, moves no version and drops nothing. A transaction that changed a deal or a contact
through the ORM without moving its version is refused at commit (`ReadModelNotMoved`), so a
new kind of write (events, trash, imports) fails loudly in its first test instead of serving
stale totals. Raw SQL (`text()`) is not seen by that guard. The trash's purge declares itself
(`purging`): it deletes only rows that left every read model when they were trashed.

**The trash.** Trashing a deal is, for the read models, deleting it (`deal_written(after=None)`)
and restoring it creating it again; trashing or restoring a contact moves the contacts'
version. Only live records are in any read model (`app.repositories.base.live`).

**Precomputed figures** that analytics and list totals read instead of the deals (not a
cache; always exact): `deal_stats` running totals per (pipeline, currency, status, stage),
maintained by `deal_written` (and, when a stage is deleted and its deals moved, by
`stage_merged`); `deal_value_counts`, live deals per value of each select and boolean custom
field, maintained by `deal_written` (and emptied with the field by `deal_field_removed`), from
which the total of a list filtered by one such value alone is summed (`deal_total`); and
`deal_daily_counts`, deals created per pipeline and UTC day, kept by database triggers on
`deals` (any statement, see migrations 0006, 0011 and 0018). `rebuild` recomputes all three
(`minicrm rebuild-stats`).

**Deep pages.** A deal page is normally read by OFFSET (its rows before it scanned). Each page
served remembers where it begins and where the next one does, so revisiting a page or going to
the next one is an index range from there (`PageStart`), at a millionth deal as at the first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from app.core.cache import Cache, Json, cache_key, cached
from app.core.text import fold
from app.db.session import after_commit
from app.models import Contact, Deal, DealStatus
from app.models.deal_stats import COUNTED_TYPES, STAT_SLOTS
from app.repositories.contacts import ContactFilters
from app.repositories.custom_fields import FilterOp
from app.repositories.deals import DealFilters, PageStart
from app.repositories.read_models import ReadModelRepository, StatKey
from app.schemas.common import PageParams

# --- keys ----------------------------------------------------------------------------------


def _deal_set(filters: DealFilters) -> list[Any]:
    """The set of deals the filters match, whatever their order."""
    return [
        sorted(filters.statuses),
        sorted(filters.stages),
        None if filters.min_amount is None else str(filters.min_amount),
        None if filters.max_amount is None else str(filters.max_amount),
        filters.owner_id,
        filters.contact_id,
        None if filters.search is None else fold(filters.search),
        filters.company_id,
        filters.pipeline_id,
        *(where.cache_part() for where in filters.custom),
    ]


def deal_count_key(filters: DealFilters) -> str:
    return cache_key("deals:count", _deal_set(filters))


def deal_page_key(filters: DealFilters, page: PageParams) -> str:
    order = [filters.order_by.value, filters.order.value, page.page_size, page.page]
    return cache_key("deals:page", _deal_set(filters) + order)


def contact_count_key(filters: ContactFilters) -> str:
    search = None if filters.search is None else fold(filters.search)
    custom = [where.cache_part() for where in filters.custom]
    return cache_key("contacts:count", [search, filters.owner_id, filters.company_id, *custom])


def counted_text(value: str | bool) -> str:
    """A custom field value as `deal_value_counts` holds it: an option as it is, a boolean
    `true` or `false` (as `app.repositories.custom_fields.value_text` reads it in SQL)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _counted_value(filters: DealFilters) -> tuple[str, str] | None:
    """(key, value) when `filters` is one equality on a counted custom field (a select or a
    boolean) and nothing else: the total is then a sum over `deal_value_counts`."""
    if len(filters.custom) != 1:
        return None
    (where,) = filters.custom
    others = _deal_set(replace(filters, custom=()))
    if where.op is not FilterOp.EQ or where.type not in COUNTED_TYPES or any(others):
        return None
    return where.key, counted_text(where.value)


def _counted_pairs(custom_fields: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """The (key, value) pairs a deal's custom values may be counted under (the counted keys
    are known only from their definitions: `ReadModelRepository.counted_keys`)."""
    return frozenset(
        (key, counted_text(value))
        for key, value in custom_fields.items()
        if isinstance(value, str | bool)
    )


def summary_key(pipeline_id: int | None, days: int, currency: str | None) -> str:
    return f"summary:{pipeline_id or 'default'}:{days}:{currency or '*'}"


def funnel_key(pipeline_id: int | None, currency: str | None) -> str:
    return f"funnel:{pipeline_id or 'default'}:{currency or '*'}"


# --- writes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DealFigures:
    """What the read models know of a deal, taken before a write changes it."""

    deal_id: int
    pipeline_id: int
    currency: str
    status: DealStatus
    stage: str
    amount: Decimal
    # The (key, value) pairs of its custom values that may be counted (`_counted_pairs`).
    values: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def of(cls, deal: Deal) -> DealFigures:
        return cls(
            deal.id,
            deal.pipeline_id,
            deal.currency,
            deal.status,
            deal.stage,
            deal.amount,
            _counted_pairs(deal.custom_fields or {}),
        )

    @property
    def stat_key(self) -> StatKey:
        return StatKey.of(self.pipeline_id, self.currency, self.status, self.stage, self.deal_id)


class ReadModels:
    """An organization's cached read models: read through it, and tell it about writes."""

    def __init__(self, session: AsyncSession, organization_id: int, cache: Cache) -> None:
        self.session = session
        self.organization_id = organization_id
        self.cache = cache
        self.repository = ReadModelRepository(session, organization_id)

    # --- versions: read them before computing anything that is to be cached --------------

    async def deals_version(self) -> int:
        return await self.repository.deals_version()

    async def contacts_version(self) -> int:
        return await self.repository.contacts_version()

    # --- reads ------------------------------------------------------------------------------

    async def deal_total(
        self, filters: DealFilters, version: int, count: Callable[[], Awaitable[int]]
    ) -> int:
        """The exact number of deals `filters` match: counted once per filter set and version
        (paging through one list, or re-sorting it, counts once). One value of a select or
        boolean custom field, and no other filter, is summed from its running count instead."""
        counted = _counted_value(filters)
        if counted is not None:
            count = partial(self.repository.deals_with_value, *counted)
        total, _ = await self._cached(deal_count_key(filters), version, count)
        return int(total)

    async def deal_page_start(
        self, filters: DealFilters, page: PageParams, version: int
    ) -> PageStart | None:
        """Where this page is known to begin, if a page served at this version told."""
        known = await self.cache.get(self.organization_id, deal_page_key(filters, page), version)
        return None if known is None else PageStart.from_json(known, filters.order_by)

    async def remember_deal_page(
        self,
        filters: DealFilters,
        page: PageParams,
        version: int,
        deals: Sequence[Deal],
        start: PageStart | None,
    ) -> None:
        """Remember where the page just read begins and, if it is full, where the next one
        does (found without OFFSET when the reader goes on)."""
        if not deals or (start is not None and start.inclusive):
            return  # nothing read, or nothing new to tell
        first = PageStart.at(deals[0], filters.order_by, inclusive=True)
        org = self.organization_id
        await self.cache.set(org, deal_page_key(filters, page), version, first.to_json())
        if len(deals) == page.page_size:
            following = PageStart.at(deals[-1], filters.order_by, inclusive=False)
            next_page = PageParams(page=page.page + 1, page_size=page.page_size)
            await self.cache.set(
                org, deal_page_key(filters, next_page), version, following.to_json()
            )

    async def contact_total(
        self, filters: ContactFilters, version: int, count: Callable[[], Awaitable[int]]
    ) -> int:
        """The exact number of contacts `filters` match, counted once per filter set and
        contacts version."""
        total, _ = await self._cached(contact_count_key(filters), version, count)
        return int(total)

    async def analytics(
        self, key: str, version: int, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], bool]:
        """An analytics result (`summary_key`, `funnel_key`) and whether it was cached."""
        value, hit = await self._cached(key, version, compute)
        return value, hit

    async def _cached(
        self, key: str, version: int, compute: Callable[[], Awaitable[Json]]
    ) -> tuple[Json, bool]:
        return await cached(self.cache, self.organization_id, key, version, compute)

    # --- writes: call in the writing transaction, after the change is flushed --------------

    async def deal_written(self, *, before: DealFigures | None, after: Deal | None) -> None:
        """A deal was created (`before` None), changed, or deleted (`after` None): move it
        between the counts of its select and boolean custom values and between running
        totals, which moves the deals' data version, and drop the organization's cached
        entries once (and only if) the transaction commits.

        Call it last in the transaction: the totals rows stay locked for as short a time as
        possible. Not for a write that changed nothing."""
        now = DealFigures.of(after) if after is not None else None
        await self._count_values(before, now)
        deltas: defaultdict[StatKey, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
        if before is not None:
            count, total = deltas[before.stat_key]
            deltas[before.stat_key] = (count - 1, total - before.amount)
        if now is not None:
            count, total = deltas[now.stat_key]
            deltas[now.stat_key] = (count + 1, total + now.amount)
        await self.repository.apply_deal_totals(deltas)  # a zero delta still moves the version
        _moved(self.session, _DEALS)
        after_commit(self.session, partial(self.cache.invalidate, self.organization_id))

    async def _count_values(self, before: DealFigures | None, after: DealFigures | None) -> None:
        """Move the deal between the counts of its select and boolean custom values, locked
        before its running totals. A transaction that writes many deals (an import batch)
        takes these rows in its deals' order, so it can deadlock with another writer of the
        same rows: PostgreSQL rolls one back, a request answers 503 `WRITE_CONFLICT`, and an
        import runs the batch again (`app.jobs.imports`)."""
        held = before.values if before is not None else frozenset()
        holds = after.values if after is not None else frozenset()
        if held == holds:
            return
        counted = await self.repository.counted_keys()
        slot = next(f.deal_id for f in (before, after) if f is not None) % STAT_SLOTS
        deltas = {(key, value, slot): -1 for key, value in held - holds if key in counted}
        deltas |= {(key, value, slot): 1 for key, value in holds - held if key in counted}
        if deltas:
            await self.repository.apply_value_counts(deltas)

    async def deal_field_removed(self, key: str) -> None:
        """A deal custom field's values were removed from every deal (with its definition):
        its value counts go, the deals' version moves (no running total sees the change), and
        the organization's cached entries are dropped once the transaction commits."""
        await self.repository.forget_value_counts(key)
        await self.repository.move_deals_version()
        _moved(self.session, _DEALS)
        after_commit(self.session, partial(self.cache.invalidate, self.organization_id))

    async def contacts_written(self) -> None:
        """A contact was created, changed or deleted: move the contacts' data version."""
        await self.repository.move_contacts_version()
        _moved(self.session, _CONTACTS)

    async def pipelines_written(self) -> None:
        """A pipeline or stage was created, changed or deleted: move the pipelines' version
        (analytics are cached under it) and drop the organization's cached entries once the
        transaction commits."""
        await self.repository.move_pipelines_version()
        after_commit(self.session, partial(self.cache.invalidate, self.organization_id))

    async def stage_merged(self, pipeline_id: int, stage: str, into: str) -> None:
        """Every deal at `stage` of the pipeline was moved to `into` (the stage is being
        deleted): its running totals join those of `into`, which moves the deals' version;
        the cache is dropped after the commit. Call it after the deals are flushed."""
        await self.repository.merge_stage_totals(pipeline_id, stage, into)
        _moved(self.session, _DEALS)
        after_commit(self.session, partial(self.cache.invalidate, self.organization_id))

    async def rebuild(self) -> None:
        """Recompute the precomputed deal figures from the deals (after a bulk load that
        bypassed them); moves the version, and drops the cache after the commit."""
        await self.repository.rebuild_deal_figures()
        _moved(self.session, _DEALS)
        after_commit(self.session, partial(self.cache.invalidate, self.organization_id))


def purging(session: AsyncSession) -> None:
    """Declare that this transaction deletes trashed records for good (`app.services.trash`):
    they left every read model when they went to the trash (that write moved the versions),
    so deleting them changes no read model and needs no new version."""
    session.sync_session.info[_PURGING] = True


# --- the guard: no deal or contact write commits without moving its version -----------------


class ReadModelNotMoved(RuntimeError):
    """A transaction changed deals or contacts without telling `ReadModels`: a programming
    error (answered as a 500), caught by the first test of the new write path."""


_DEALS = "deals"
_CONTACTS = "contacts"
_TRACKED = {Deal.__table__: _DEALS, Contact.__table__: _CONTACTS}
_PENDING = "read_models_pending"
_PURGING = "read_models_purging"


def _pending(session: Session) -> set[str]:
    pending: set[str] = session.info.setdefault(_PENDING, set())
    return pending


def _moved(session: AsyncSession, kind: str) -> None:
    _pending(session.sync_session).discard(kind)


def _kind(instance: object) -> str | None:
    if isinstance(instance, Deal):
        return _DEALS
    if isinstance(instance, Contact):
        return _CONTACTS
    return None


@event.listens_for(Session, "before_flush")
def _note_changed_rows(session: Session, _: UOWTransaction, __: object) -> None:
    for instance in chain(session.new, session.deleted):
        kind = _kind(instance)
        if kind is not None:
            _pending(session).add(kind)
    for instance in session.dirty:
        kind = _kind(instance)
        # `dirty` holds anything assigned to, even the value it had: only a net change counts.
        if kind is not None and session.is_modified(instance, include_collections=False):
            _pending(session).add(kind)


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_statements(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        kind = _TRACKED.get(getattr(state.statement, "table", None))  # type: ignore[arg-type]
        if kind is not None:
            _pending(state.session).add(kind)


@event.listens_for(Session, "before_commit")
def _refuse_unmoved(session: Session) -> None:
    pending = session.info.get(_PENDING)
    if pending and not session.info.get(_PURGING):
        raise ReadModelNotMoved(
            f"{', '.join(sorted(pending))} changed without moving their data version "
            "(call ReadModels.deal_written / contacts_written in the writing transaction)"
        )


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_PURGING, None)
