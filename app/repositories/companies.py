from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, func, select

from app.core.text import fold
from app.models import OPEN_DEAL_STATUSES, Company, Contact, Deal
from app.repositories import custom_fields
from app.repositories.base import RowLock, TenantRepository, live, sorted_by, with_lock
from app.repositories.cursor import KeyOrder, Keyset, scroll
from app.repositories.custom_fields import CustomFieldFilter
from app.schemas.common import PageParams, SortOrder
from app.schemas.company import CompanyOrderBy

_ORDER_COLUMNS = {CompanyOrderBy.CREATED_AT: Company.created_at, CompanyOrderBy.NAME: Company.name}


@dataclass(frozen=True, slots=True)
class CompanyFilters:
    search: str | None = None
    owner_id: int | None = None
    order_by: CompanyOrderBy = CompanyOrderBy.CREATED_AT
    order: SortOrder = SortOrder.DESC
    # `cf.<key>` filters, and `order_by=cf.<key>` (which then replaces `order_by`).
    custom: tuple[CustomFieldFilter, ...] = ()
    custom_order: str | None = None


@dataclass(frozen=True, slots=True)
class CompanyCounts:
    """What a company's answer shows of the records that refer to it (live ones only)."""

    contacts: int = 0
    open_deals: int = 0


class CompanyRepository(TenantRepository):
    def _rows(self) -> Select[Company]:
        # Companies are not trashable: every row of the organization is live.
        return select(Company).where(Company.organization_id == self.organization_id)

    async def get(self, company_id: int, *, lock: RowLock | None = None) -> Company | None:
        query = self._rows().where(Company.id == company_id)
        return await self.session.scalar(with_lock(query, lock))

    async def existing_ids(
        self, company_ids: Collection[int], *, lock: RowLock | None = None
    ) -> set[int]:
        """Which of `company_ids` are companies of this organization (for a batch of rows
        that name them, e.g. an import)."""
        if not company_ids:
            return set()
        query = (
            select(Company.id)
            .where(Company.organization_id == self.organization_id, Company.id.in_(company_ids))
            .order_by(Company.id)
        )
        return set((await self.session.scalars(with_lock(query, lock))).all())

    async def count_matching(self, filters: CompanyFilters) -> int:
        return await self.count(self._matching(filters))

    async def list(self, filters: CompanyFilters, page: PageParams) -> Sequence[Company]:
        """One page of the matching companies; their total is `count_matching(filters)`."""
        return await self.page(self._matching(filters), page)

    async def scroll(
        self, filters: CompanyFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Company], Keyset | None]:
        """Up to `limit` matching companies after `after`, and where the next page starts."""
        order = KeyOrder(
            _ORDER_COLUMNS[filters.order_by],
            Company.id,
            descending=filters.order is SortOrder.DESC,
        )
        return await scroll(self.session, self._matching(filters), order, after, limit)

    def _matching(self, filters: CompanyFilters) -> Select[Any]:
        query = self._rows()
        if filters.search:
            query = query.where(Company.search_text.contains(fold(filters.search), autoescape=True))
        if filters.owner_id is not None:
            query = query.where(Company.owner_id == filters.owner_id)
        dialect = self.session.get_bind().dialect.name
        query = custom_fields.matching(query, Company, filters.custom, dialect)
        if filters.custom_order is not None:
            descending = filters.order is SortOrder.DESC
            order = custom_fields.custom_sort(
                Company, filters.custom_order, dialect, descending=descending
            )
            return query.order_by(*order)
        return sorted_by(query, _ORDER_COLUMNS[filters.order_by], Company.id, filters.order)

    async def counts(self, company_ids: Collection[int]) -> dict[int, CompanyCounts]:
        """Live contacts and open live deals of each company (two grouped index scans, by
        `ix_contacts_company` and `ix_deals_company`); a company without any is missing."""
        if not company_ids:
            return {}
        ids = sorted(company_ids)
        contacts = await self.session.execute(
            select(Contact.company_id, func.count())
            .where(
                Contact.organization_id == self.organization_id,
                Contact.company_id.in_(ids),
                live(Contact),
            )
            .group_by(Contact.company_id)
        )
        deals = await self.session.execute(
            select(Deal.company_id, func.count())
            .where(
                Deal.organization_id == self.organization_id,
                Deal.company_id.in_(ids),
                Deal.status.in_(OPEN_DEAL_STATUSES),
                live(Deal),
            )
            .group_by(Deal.company_id)
        )
        contact_counts: dict[int | None, int] = dict(contacts.all())
        deal_counts: dict[int | None, int] = dict(deals.all())
        return {
            company_id: CompanyCounts(
                contact_counts.get(company_id, 0), deal_counts.get(company_id, 0)
            )
            for company_id in ids
            if company_id in contact_counts or company_id in deal_counts
        }

    async def has_contacts(self, company_id: int) -> bool:
        """Whether a live contact belongs to the company."""
        return await self._referred_by(Contact, company_id)

    async def has_deals(self, company_id: int) -> bool:
        """Whether a live deal names the company, whatever its status."""
        return await self._referred_by(Deal, company_id)

    async def _referred_by(self, model: type[Contact] | type[Deal], company_id: int) -> bool:
        condition = exists().where(
            model.organization_id == self.organization_id,
            model.company_id == company_id,
            live(model),
        )
        return bool(await self.session.scalar(select(condition)))

    async def add(self, company: Company) -> Company:
        company.organization_id = self.organization_id
        self.session.add(company)
        await self.session.flush()
        return company

    async def delete(self, company: Company) -> None:
        await self.session.delete(company)
        await self.session.flush()
