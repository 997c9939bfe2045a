"""Deals: the pipeline rules, the automatic timeline, and analytics-cache invalidation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.cache import Cache, cached
from app.core.errors import ContactReferenceInvalid, DealNotFound, DealWonRequiresAmount
from app.core.tenancy import Caller, TenantContext
from app.core.text import fold
from app.db.session import after_commit
from app.models import ActivityType, Deal, DealStatus
from app.repositories.activities import ActivityRepository
from app.repositories.analytics import AnalyticsRepository, StatKey
from app.repositories.base import RowLock
from app.repositories.contacts import ContactRepository
from app.repositories.deals import TENANT_AND_DEAL, DealFilters, DealRepository, PageStart
from app.schemas.common import PageParams
from app.schemas.deal import DealCreate, DealUpdate
from app.services.contacts import ensure_owner_assignable
from app.services.policies import ensure_can_modify, ensure_can_move_stage
from app.services.tenancy import resolve_tenant


class DealService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, cache: Cache) -> None:
        self.session = session
        self.ctx = ctx
        self.cache = cache
        self.deals = DealRepository(session, ctx.organization_id)
        self.contacts = ContactRepository(session, ctx.organization_id)
        self.activities = ActivityRepository(session, ctx.organization_id)
        self.analytics = AnalyticsRepository(session, ctx.organization_id)

    @staticmethod
    async def read_as_member(
        read_engine: AsyncEngine, caller: Caller, organization_id: int, deal_id: int
    ) -> tuple[TenantContext, Row[Any] | None]:
        """The caller's context and one deal (None: not found), for `GET /deals/{id}`, the
        busiest request: the tenant is resolved (401, 403) by the statement that reads the
        deal, a round trip less than resolving it first. It runs on a pooled connection of
        `read_engine` without an ORM session, whose setup and teardown cost more than the
        statement for one row."""
        async with read_engine.connect() as connection:
            ctx, row = await resolve_tenant(
                connection, caller, organization_id, TENANT_AND_DEAL, deal_id=deal_id
            )
        return ctx, (row if row.id is not None else None)

    async def list(self, filters: DealFilters, page: PageParams) -> tuple[Sequence[Deal], int]:
        """A page and the exact total, cheap at a million deals.

        Both costly parts are remembered under the deals' data version, which every deal
        write moves in its own transaction, so nothing remembered outlives the data it
        describes (in any worker, whatever happened to invalidation):
        - the total, per filter set: paging through one list counts once;
        - where each page served begins, and where the next one does: that page, or the
          next, is then an index range instead of an OFFSET scan past the rows before it."""
        org = self.ctx.organization_id
        version = await self.analytics.version()  # first: what is computed after is as fresh

        async def count() -> int:
            return await self.deals.count_matching(filters)

        total, _ = await cached(self.cache, org, filters.count_key(), version, count)
        page_key = filters.page_key(page)
        known = await self.cache.get(org, page_key, version)
        start = None if known is None else PageStart.from_json(known, filters.order_by)
        deals = await self.deals.list(filters, page, start)
        if deals and (start is None or not start.inclusive):
            first = PageStart.at(deals[0], filters.order_by, inclusive=True)
            await self.cache.set(org, page_key, version, first.to_json())
            if len(deals) == page.page_size:
                following = PageStart.at(deals[-1], filters.order_by, inclusive=False)
                next_page = PageParams(page=page.page + 1, page_size=page.page_size)
                await self.cache.set(org, filters.page_key(next_page), version, following.to_json())
        return deals, int(total)

    async def get(self, deal_id: int, *, lock: RowLock | None = None) -> Deal:
        deal = await self.deals.get(deal_id, lock=lock)
        if deal is None:
            raise DealNotFound()
        return deal

    async def create(self, data: DealCreate) -> Deal:
        await self._ensure_contact(data.contact_id)
        deal = Deal(
            contact_id=data.contact_id,
            owner_id=self.ctx.user_id,
            title=data.title,
            search_text=fold(data.title),
            amount=data.amount,
            currency=data.currency,
            status=DealStatus.NEW,
        )
        try:
            await self.deals.add(deal)
        except IntegrityError as exc:  # the contact was deleted under us
            raise ContactReferenceInvalid() from exc
        await self._record_totals(before=None, after=deal)
        return deal

    async def update(self, deal_id: int, data: DealUpdate) -> Deal:
        """Every rule is checked against the values the deal will have after the update.

        The deal row is locked first, so two concurrent PATCHes of one deal run one after the
        other and each sees the other's result: no update and no activity is lost."""
        deal = await self.get(deal_id, lock=RowLock.UPDATE)
        ensure_can_modify(self.ctx, deal.owner_id, "deals")
        changes = data.changes()
        new_stage = changes.get("stage", deal.stage)
        new_status = changes.get("status", deal.status)
        ensure_can_move_stage(self.ctx, deal.stage, new_stage)
        if "owner_id" in changes:
            await ensure_owner_assignable(
                self.session, self.ctx, deal.owner_id, changes["owner_id"]
            )
        if changes.get("contact_id", deal.contact_id) != deal.contact_id:
            await self._ensure_contact(changes["contact_id"])
        if new_status is DealStatus.WON and changes.get("amount", deal.amount) <= 0:
            raise DealWonRequiresAmount()

        old_status, old_stage = deal.status, deal.stage
        before = (StatKey.of(deal), deal.amount)
        for field, value in changes.items():
            setattr(deal, field, value)
        if "title" in changes:
            deal.search_text = fold(deal.title)
        if new_status != old_status:
            await self.activities.add(
                deal.id,
                ActivityType.STATUS_CHANGED,
                {"old_status": old_status.value, "new_status": new_status.value},
                self.ctx.user_id,
            )
        if new_stage != old_stage:
            await self.activities.add(
                deal.id,
                ActivityType.STAGE_CHANGED,
                {"old_stage": old_stage.value, "new_stage": new_stage.value},
                self.ctx.user_id,
            )
        try:
            await self.session.flush()
        except IntegrityError as exc:  # the new contact was deleted under us
            raise ContactReferenceInvalid() from exc
        if changes:
            await self._record_totals(before=before, after=deal)
        return deal

    async def delete(self, deal_id: int) -> None:
        """Its tasks and activities go with it (ON DELETE CASCADE)."""
        deal = await self.get(deal_id, lock=RowLock.UPDATE)
        ensure_can_modify(self.ctx, deal.owner_id, "deals")
        before = (StatKey.of(deal), deal.amount)
        await self.deals.delete(deal)
        await self._record_totals(before=before, after=None)

    async def _ensure_contact(self, contact_id: int) -> None:
        # A share lock keeps the contact from being deleted until this transaction commits.
        if await self.contacts.get(contact_id, lock=RowLock.SHARE) is None:
            raise ContactReferenceInvalid()

    async def _record_totals(
        self, *, before: tuple[StatKey, Decimal] | None, after: Deal | None
    ) -> None:
        """Move the deal between running totals, then drop the organization's cached analytics
        once (and only if) the transaction commits. Runs last in the transaction, so the
        totals rows are locked for as short a time as possible."""
        deltas: defaultdict[StatKey, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
        if before is not None:
            key, amount = before
            count, total = deltas[key]
            deltas[key] = (count - 1, total - amount)
        if after is not None:
            key = StatKey.of(after)
            count, total = deltas[key]
            deltas[key] = (count + 1, total + after.amount)
        await self.analytics.apply(deltas)
        after_commit(self.session, partial(self.cache.invalidate, self.ctx.organization_id))
