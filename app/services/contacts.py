from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.contact_keys import match_keys
from app.core.errors import (
    CompanyReferenceInvalid,
    ContactHasDeals,
    ContactNotFound,
    CustomFieldOrderNotScrollable,
    OwnerNotAMember,
)
from app.core.permissions import Permission
from app.core.tenancy import TenantContext
from app.core.text import fold_fields
from app.core.versioning import ExpectedVersion, ensure_version
from app.db.types import utcnow
from app.models import Contact, CustomFieldEntity
from app.repositories.base import RowLock
from app.repositories.companies import CompanyRepository
from app.repositories.contacts import ContactFilters, ContactRepository
from app.repositories.cursor import Keyset
from app.repositories.organizations import OrganizationRepository
from app.repositories.trash import TrashRepository
from app.schemas.common import PageParams
from app.schemas.contact import ContactCreate, ContactRead, ContactUpdate
from app.schemas.event import EventType
from app.services import custom_fields, events
from app.services.policies import ensure_can_modify
from app.services.read_models import ReadModels


async def ensure_owner_assignable(
    session: AsyncSession, ctx: TenantContext, current_owner_id: int, new_owner_id: int
) -> None:
    """Reassigning a record needs manager or above (403), and a member of this org (400)."""
    if new_owner_id == current_owner_id:
        return
    ctx.require(Permission.REASSIGN_OWNER, "Only managers and above may reassign owner_id.")
    if await OrganizationRepository(session).get_role(ctx.organization_id, new_owner_id) is None:
        raise OwnerNotAMember()


class ContactService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, cache: Cache) -> None:
        self.session = session
        self.ctx = ctx
        self.contacts = ContactRepository(session, ctx.organization_id)
        self.companies = CompanyRepository(session, ctx.organization_id)
        self.trash = TrashRepository(session, ctx.organization_id)
        self.read_models = ReadModels(session, ctx.organization_id, cache)

    async def list(
        self, filters: ContactFilters, page: PageParams
    ) -> tuple[Sequence[Contact], int]:
        """A page and the exact total. The total (a second pass of the search) is cached per
        filter set under the contacts' data version (see `app.services.read_models`)."""
        version = await self.read_models.contacts_version()  # first: a total after is as fresh
        filters = await custom_fields.resolved(
            self.session, self.ctx.organization_id, CustomFieldEntity.CONTACT, filters
        )

        async def count() -> int:
            return await self.contacts.count_matching(filters)

        total = await self.read_models.contact_total(filters, version, count)
        return await self.contacts.list(filters, page), total

    async def scroll(
        self, filters: ContactFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Contact], Keyset | None]:
        """Cursor mode: an index range after `after`, with no total. Not sorted by a custom
        field."""
        if filters.custom_order is not None:
            raise CustomFieldOrderNotScrollable()
        filters = await custom_fields.resolved(
            self.session, self.ctx.organization_id, CustomFieldEntity.CONTACT, filters
        )
        return await self.contacts.scroll(filters, after, limit)

    async def get(self, contact_id: int) -> Contact:
        contact = await self.contacts.get(contact_id)
        if contact is None:
            raise ContactNotFound()
        return contact

    async def create(self, data: ContactCreate) -> Contact:
        if data.company_id is not None:
            await self._ensure_company(data.company_id)
        values = await custom_fields.values_for(
            self.session, self.ctx.organization_id, CustomFieldEntity.CONTACT, data.custom_fields
        )
        contact = Contact(
            owner_id=self.ctx.user_id,
            company_id=data.company_id,
            name=data.name,
            email=data.email,
            phone=data.phone,
            search_text=fold_fields(data.name, data.email, data.phone),
            custom_fields=values,
        )
        contact.email_key, contact.phone_key = match_keys(data.email, data.phone)
        await self.contacts.add(contact)
        await self.read_models.contacts_written()
        events.record(self.session, self.ctx, EventType.CONTACT_CREATED, _read(contact))
        return contact

    async def update(
        self, contact_id: int, data: ContactUpdate, *, expected: ExpectedVersion | None = None
    ) -> Contact:
        definitions = await custom_fields.lock_definitions_first(
            self.session, self.ctx.organization_id, CustomFieldEntity.CONTACT, data
        )
        # Locked first: two concurrent PATCHes run one after the other, and `expected` is
        # checked against the version this write starts from.
        contact = await self.contacts.get(contact_id, lock=RowLock.UPDATE)
        if contact is None:
            raise ContactNotFound()
        ensure_can_modify(self.ctx, contact.owner_id, "contacts")
        ensure_version(expected, contact.id, contact.updated_at)
        # Fields sent with the value they have are no change: nothing is written for them.
        given = data.changes()
        custom = given.pop("custom_fields", None)
        changes = {
            field: value for field, value in given.items() if value != getattr(contact, field)
        }
        values = custom_fields.changed_values(definitions, custom, contact.custom_fields)
        if values is not None:
            changes["custom_fields"] = values
        if not changes:
            return contact
        if "owner_id" in changes:
            await ensure_owner_assignable(
                self.session, self.ctx, contact.owner_id, changes["owner_id"]
            )
        if changes.get("company_id") is not None:
            await self._ensure_company(changes["company_id"])
        before = _read(contact)
        for field, value in changes.items():
            setattr(contact, field, value)
        contact.search_text = fold_fields(contact.name, contact.email, contact.phone)
        contact.email_key, contact.phone_key = match_keys(contact.email, contact.phone)
        await self.session.flush()
        await self.read_models.contacts_written()
        events.record_update(
            self.session, self.ctx, EventType.CONTACT_UPDATED, before, _read(contact)
        )
        return contact

    async def delete(self, contact_id: int, *, expected: ExpectedVersion | None = None) -> None:
        """Moves the contact to the trash (`restore` brings it back). Refused while a live
        deal refers to it; deals in the trash do not count (purging the contact purges them)."""
        # Exclusive lock first: a deal being created for this contact (which holds a share lock
        # on the live contact) commits before we look for deals, so the check below sees it;
        # one created after waits, then finds the contact gone.
        contact = await self.contacts.get(contact_id, lock=RowLock.UPDATE)
        if contact is None:
            raise ContactNotFound()
        ensure_can_modify(self.ctx, contact.owner_id, "contacts")
        ensure_version(expected, contact.id, contact.updated_at)
        if await self.contacts.has_deals(contact_id):
            raise ContactHasDeals()
        gone = _read(contact)
        await self.contacts.trash(contact, utcnow())
        await self.read_models.contacts_written()
        events.record(self.session, self.ctx, EventType.CONTACT_DELETED, gone)

    async def restore(self, contact_id: int) -> Contact:
        """Bring a contact back from the trash (404 if it is not there): who may delete it may
        restore it."""
        contact = await self.trash.contact(contact_id, lock=RowLock.UPDATE)
        if contact is None:
            raise ContactNotFound()
        ensure_can_modify(self.ctx, contact.owner_id, "contacts")
        contact.deleted_at = None
        await self.session.flush()
        await self.read_models.contacts_written()
        events.record(self.session, self.ctx, EventType.CONTACT_RESTORED, _read(contact))
        return contact

    async def _ensure_company(self, company_id: int) -> None:
        # A share lock keeps the company from being deleted until this transaction commits.
        if await self.companies.get(company_id, lock=RowLock.SHARE) is None:
            raise CompanyReferenceInvalid()


def _read(contact: Contact) -> ContactRead:
    return ContactRead.model_validate(contact)
