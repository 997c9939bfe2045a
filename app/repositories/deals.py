from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from app.core.text import fold
from app.models import Deal, DealStage, DealStatus
from app.repositories.base import RowLock, TenantRepository, sorted_by, with_lock
from app.schemas.common import PageParams, SortOrder
from app.schemas.deal import DealOrderBy

_ORDER_COLUMNS = {
    DealOrderBy.CREATED_AT: Deal.created_at,
    DealOrderBy.UPDATED_AT: Deal.updated_at,
    DealOrderBy.AMOUNT: Deal.amount,
    DealOrderBy.TITLE: Deal.title,
}


@dataclass(frozen=True, slots=True)
class DealFilters:
    statuses: tuple[DealStatus, ...] = ()
    stages: tuple[DealStage, ...] = ()
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    owner_id: int | None = None
    contact_id: int | None = None
    search: str | None = None
    order_by: DealOrderBy = DealOrderBy.CREATED_AT
    order: SortOrder = SortOrder.DESC


class DealRepository(TenantRepository):
    async def get(self, deal_id: int, *, lock: RowLock | None = None) -> Deal | None:
        query = select(Deal).where(Deal.organization_id == self.organization_id, Deal.id == deal_id)
        return await self.session.scalar(with_lock(query, lock))

    async def list(self, filters: DealFilters, page: PageParams) -> tuple[Sequence[Deal], int]:
        query = select(Deal).where(Deal.organization_id == self.organization_id)
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
        if filters.search:
            query = query.where(Deal.search_text.contains(fold(filters.search), autoescape=True))
        query = sorted_by(query, _ORDER_COLUMNS[filters.order_by], Deal.id, filters.order)
        return await self.paginate(query, page, id_column=Deal.id)

    async def add(self, deal: Deal) -> Deal:
        deal.organization_id = self.organization_id
        self.session.add(deal)
        await self.session.flush()
        return deal

    async def delete(self, deal: Deal) -> None:
        await self.session.delete(deal)
        await self.session.flush()
