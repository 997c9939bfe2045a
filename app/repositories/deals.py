from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam

from app.core.text import fold
from app.db.session import plan_for_values
from app.models import Deal, DealStatus
from app.repositories import custom_fields
from app.repositories.base import RowLock, TenantRepository, live, sorted_by, with_lock
from app.repositories.cursor import KeyOrder, Keyset, scroll
from app.repositories.custom_fields import CustomFieldFilter
from app.repositories.tenancy import ORGANIZATION_ID, tenant_query
from app.repositories.trash import put_in_trash
from app.schemas.common import PageParams, SortOrder
from app.schemas.deal import DealOrderBy

_ORDER_COLUMNS = {
    DealOrderBy.CREATED_AT: Deal.created_at,
    DealOrderBy.UPDATED_AT: Deal.updated_at,
    DealOrderBy.AMOUNT: Deal.amount,
    DealOrderBy.TITLE: Deal.title,
}

_deals = Deal.__table__
# `GET /deals/{id}`, the busiest request, in one statement: the tenant (`tenant_query`) and
# the deal (all NULL: no such deal in this organization). Built once, on the tables (Core):
# no statement construction, ORM identity map or entity per request.
TENANT_AND_DEAL = tenant_query(
    *_deals.c,
    extend=lambda query: query.outerjoin(
        _deals,
        and_(
            _deals.c.organization_id == ORGANIZATION_ID,
            _deals.c.id == bindparam("deal_id"),
            live(_deals.c),
        ),
    ),
)


def _key_order(filters: DealFilters) -> KeyOrder:
    return KeyOrder(
        _ORDER_COLUMNS[filters.order_by], Deal.id, descending=filters.order is SortOrder.DESC
    )


@dataclass(frozen=True, slots=True)
class DealFilters:
    statuses: tuple[DealStatus, ...] = ()
    stages: tuple[str, ...] = ()
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    owner_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    pipeline_id: int | None = None
    search: str | None = None
    order_by: DealOrderBy = DealOrderBy.CREATED_AT
    order: SortOrder = SortOrder.DESC
    # `cf.<key>` filters, and `order_by=cf.<key>` (which then replaces `order_by`).
    custom: tuple[CustomFieldFilter, ...] = ()
    custom_order: str | None = None


@dataclass(frozen=True, slots=True)
class PageStart:
    """Where a page begins in its list's order: at the row with this sort key (inclusive),
    or just after it. Lets a page be read by an index range instead of an OFFSET scan."""

    value: Any  # the ordering column's value
    deal_id: int
    inclusive: bool

    def to_json(self) -> list[Any]:
        value = self.value.isoformat() if isinstance(self.value, datetime) else str(self.value)
        return [value, self.deal_id, self.inclusive]

    @classmethod
    def from_json(cls, data: list[Any], order_by: DealOrderBy) -> PageStart:
        raw, deal_id, inclusive = data
        value: Any = raw
        if order_by is DealOrderBy.AMOUNT:
            value = Decimal(raw)
        elif order_by in (DealOrderBy.CREATED_AT, DealOrderBy.UPDATED_AT):
            value = datetime.fromisoformat(raw)
        return cls(value, int(deal_id), bool(inclusive))

    @classmethod
    def at(cls, deal: Deal, order_by: DealOrderBy, *, inclusive: bool) -> PageStart:
        return cls(getattr(deal, _ORDER_COLUMNS[order_by].key), deal.id, inclusive)


class DealRepository(TenantRepository):
    async def get(self, deal_id: int, *, lock: RowLock | None = None) -> Deal | None:
        query = self.live_rows(Deal).where(Deal.id == deal_id)
        return await self.session.scalar(with_lock(query, lock))

    async def count_matching(self, filters: DealFilters) -> int:
        return await self.count(self._matching(filters))

    async def list(
        self, filters: DealFilters, page: PageParams, start: PageStart | None = None
    ) -> Sequence[Deal]:
        """One page of the matching deals; their total is `count_matching(filters)`.

        With `start` (where this page is known to begin), the page is an index range from
        there; otherwise the rows before it are skipped by OFFSET."""
        query = self._matching(filters)
        if start is None:
            return await self.page(query, page, id_column=Deal.id)
        await plan_for_values(self.session)
        bound = _key_order(filters).from_(
            Keyset(start.value, start.deal_id), inclusive=start.inclusive
        )
        rows = await self.session.scalars(query.where(bound).limit(page.page_size))
        return rows.all()

    async def scroll(
        self, filters: DealFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Deal], Keyset | None]:
        """Up to `limit` matching deals after `after`, and where the next page starts."""
        return await scroll(
            self.session, self._matching(filters), _key_order(filters), after, limit
        )

    async def export_batch(
        self, filters: DealFilters, fields: Sequence[str], after_id: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        """An export's next batch: up to `limit` matching deals after `after_id`, in id
        order, as rows of the columns `fields`. The filters (and their sort, ignored) are the
        list's own, so an export answers what the list does."""
        return await self.id_batch(self._matching(filters), Deal.id, fields, after_id, limit)

    def _matching(self, filters: DealFilters) -> Select[Any]:
        query = self.live_rows(Deal)
        if filters.statuses:
            query = query.where(Deal.status.in_(filters.statuses))
        if filters.stages:
            query = query.where(Deal.stage.in_(filters.stages))
        if filters.min_amount is not None:
            query = query.where(Deal.amount >= filters.min_amount)
        if filters.max_amount is not None:
            query = query.where(Deal.amount <= filters.max_amount)
        if filters.owner_id is not None:
            query = query.where(Deal.owner_id == filters.owner_id)
        if filters.contact_id is not None:
            query = query.where(Deal.contact_id == filters.contact_id)
        if filters.company_id is not None:
            query = query.where(Deal.company_id == filters.company_id)
        if filters.pipeline_id is not None:
            query = query.where(Deal.pipeline_id == filters.pipeline_id)
        if filters.search:
            query = query.where(Deal.search_text.contains(fold(filters.search), autoescape=True))
        dialect = self.session.get_bind().dialect.name
        query = custom_fields.matching(query, Deal, filters.custom, dialect)
        if filters.custom_order is not None:
            descending = filters.order is SortOrder.DESC
            order = custom_fields.custom_sort(
                Deal, filters.custom_order, dialect, descending=descending
            )
            return query.order_by(*order)
        return sorted_by(query, _ORDER_COLUMNS[filters.order_by], Deal.id, filters.order)

    async def add(self, deal: Deal) -> Deal:
        deal.organization_id = self.organization_id
        self.session.add(deal)
        await self.session.flush()
        return deal

    async def trash(self, deal: Deal, at: datetime) -> None:
        put_in_trash(deal, at)
        await self.session.flush()
