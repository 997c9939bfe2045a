"""Companies (contract section 17): an organization's companies, which its contacts belong to
and its deals may name.

A company's answer shows how many live contacts belong to it and how many open live deals
name it (`contacts_count`, `open_deals_count`), counted when it is read: they are no columns
of the company, so no contact or deal write has to touch it. Its version (the `ETag`) names
them (`app.core.versioning`).

Deleting a company deletes it for good (companies have no trash). It is refused while a live
contact belongs to it (409 `COMPANY_HAS_CONTACTS`) or a live deal names it (409
`COMPANY_HAS_DEALS`): changing a deal's company is a change of that deal (its owner's to
make, with its own event), not a side effect of deleting the company. Contacts and deals in
the trash lose the company (`TrashRepository.forget_company`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    CompanyHasContacts,
    CompanyHasDeals,
    CompanyNotFound,
    CustomFieldOrderNotScrollable,
)
from app.core.tenancy import TenantContext
from app.core.text import fold_fields
from app.core.versioning import ExpectedVersion, ensure_version
from app.models import Company, CustomFieldEntity
from app.repositories.base import RowLock
from app.repositories.companies import CompanyCounts, CompanyFilters, CompanyRepository
from app.repositories.cursor import Keyset
from app.repositories.trash import TrashRepository
from app.schemas.common import PageParams
from app.schemas.company import CompanyCreate, CompanyRead, CompanyUpdate
from app.schemas.event import EventType
from app.services import custom_fields, events
from app.services.contacts import ensure_owner_assignable
from app.services.policies import ensure_can_modify


class CompanyService:
    def __init__(self, session: AsyncSession, ctx: TenantContext) -> None:
        self.session = session
        self.ctx = ctx
        self.companies = CompanyRepository(session, ctx.organization_id)
        self.trash = TrashRepository(session, ctx.organization_id)

    async def list(
        self, filters: CompanyFilters, page: PageParams
    ) -> tuple[Sequence[CompanyRead], int]:
        """A page (with each company's counts) and the exact total."""
        filters = await custom_fields.resolved(
            self.session, self.ctx.organization_id, CustomFieldEntity.COMPANY, filters
        )
        total = await self.companies.count_matching(filters)
        return await self._read_all(await self.companies.list(filters, page)), total

    async def scroll(
        self, filters: CompanyFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[CompanyRead], Keyset | None]:
        """Cursor mode: an index range after `after`, with no total. Not sorted by a custom
        field."""
        if filters.custom_order is not None:
            raise CustomFieldOrderNotScrollable()
        filters = await custom_fields.resolved(
            self.session, self.ctx.organization_id, CustomFieldEntity.COMPANY, filters
        )
        companies, following = await self.companies.scroll(filters, after, limit)
        return await self._read_all(companies), following

    async def get(self, company_id: int) -> CompanyRead:
        company = await self.companies.get(company_id)
        if company is None:
            raise CompanyNotFound()
        return await self._read(company)

    async def create(self, data: CompanyCreate) -> CompanyRead:
        values = await custom_fields.values_for(
            self.session, self.ctx.organization_id, CustomFieldEntity.COMPANY, data.custom_fields
        )
        company = Company(
            owner_id=self.ctx.user_id,
            name=data.name,
            domain=data.domain,
            phone=data.phone,
            address=data.address,
            search_text=fold_fields(data.name, data.domain),
            custom_fields=values,
        )
        await self.companies.add(company)
        created = _read(company, CompanyCounts())
        events.record(self.session, self.ctx, EventType.COMPANY_CREATED, created)
        return created

    async def update(
        self, company_id: int, data: CompanyUpdate, *, expected: ExpectedVersion | None = None
    ) -> CompanyRead:
        definitions = await custom_fields.lock_definitions_first(
            self.session, self.ctx.organization_id, CustomFieldEntity.COMPANY, data
        )
        # Locked first: concurrent PATCHes run one after the other, and `expected` is checked
        # against the version this write starts from.
        company = await self.companies.get(company_id, lock=RowLock.UPDATE)
        if company is None:
            raise CompanyNotFound()
        ensure_can_modify(self.ctx, company.owner_id, "companies")
        counts = await self._counts(company)
        before = _read(company, counts)
        ensure_version(expected, company.id, company.updated_at, *derived_figures(before))
        given = data.changes()
        custom = given.pop("custom_fields", None)
        changes = {
            field: value for field, value in given.items() if value != getattr(company, field)
        }
        values = custom_fields.changed_values(definitions, custom, company.custom_fields)
        if values is not None:
            changes["custom_fields"] = values
        if not changes:
            return before
        if "owner_id" in changes:
            await ensure_owner_assignable(
                self.session, self.ctx, company.owner_id, changes["owner_id"]
            )
        for field, value in changes.items():
            setattr(company, field, value)
        company.search_text = fold_fields(company.name, company.domain)
        await self.session.flush()
        after = _read(company, counts)
        events.record_update(self.session, self.ctx, EventType.COMPANY_UPDATED, before, after)
        return after

    async def delete(self, company_id: int, *, expected: ExpectedVersion | None = None) -> None:
        """Deletes the company for good: see the module for what is refused and what happens
        to contacts and deals in the trash."""
        # Exclusive lock first: whoever gives a contact or deal this company holds a share
        # lock on it (`ContactService`, `DealService`, imports), so those who got in first
        # have committed before the checks below, and those after find it gone.
        company = await self.companies.get(company_id, lock=RowLock.UPDATE)
        if company is None:
            raise CompanyNotFound()
        ensure_can_modify(self.ctx, company.owner_id, "companies")
        gone = await self._read(company)
        ensure_version(expected, company.id, company.updated_at, *derived_figures(gone))
        await self._ensure_unreferenced(company.id)
        # Records trashed before the check above lose the company here (one trashed after it
        # was live at the check: refused). One restored meanwhile is live again and keeps it:
        # the database then refuses the delete, and the check, run again, says why.
        await self.trash.forget_company(company.id)
        try:
            async with self.session.begin_nested():
                await self.companies.delete(company)
                events.record(self.session, self.ctx, EventType.COMPANY_DELETED, gone)
        except IntegrityError:
            await self._ensure_unreferenced(company.id)
            raise

    async def _ensure_unreferenced(self, company_id: int) -> None:
        if await self.companies.has_contacts(company_id):
            raise CompanyHasContacts()
        if await self.companies.has_deals(company_id):
            raise CompanyHasDeals()

    async def _counts(self, company: Company) -> CompanyCounts:
        return (await self.companies.counts([company.id])).get(company.id, CompanyCounts())

    async def _read(self, company: Company) -> CompanyRead:
        return _read(company, await self._counts(company))

    async def _read_all(self, companies: Sequence[Company]) -> Sequence[CompanyRead]:
        counts = await self.companies.counts([company.id for company in companies])
        return [_read(company, counts.get(company.id, CompanyCounts())) for company in companies]


def derived_figures(company: CompanyRead) -> tuple[int, int]:
    """The figures of a company's answer that come from other records: its version (the
    `ETag`) names them (`app.core.versioning`)."""
    return company.contacts_count, company.open_deals_count


def _read(company: Company, counts: CompanyCounts) -> CompanyRead:
    return CompanyRead(
        id=company.id,
        organization_id=company.organization_id,
        owner_id=company.owner_id,
        name=company.name,
        domain=company.domain,
        phone=company.phone,
        address=company.address,
        contacts_count=counts.contacts,
        open_deals_count=counts.open_deals,
        created_at=company.created_at,
        updated_at=company.updated_at,
        custom_fields=company.custom_fields,
    )
