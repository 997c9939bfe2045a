from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, exists, select, update

from app.core.cache import cache_key
from app.core.text import fold
from app.models import Contact, Deal, Organization
from app.repositories.base import RowLock, TenantRepository, sorted_by, with_lock
from app.schemas.common import PageParams, SortOrder
from app.schemas.contact import ContactOrderBy

_ORDER_COLUMNS = {ContactOrderBy.CREATED_AT: Contact.created_at, ContactOrderBy.NAME: Contact.name}


@dataclass(frozen=True, slots=True)
class ContactFilters:
    search: str | None = None
    owner_id: int | None = None
    order_by: ContactOrderBy = ContactOrderBy.CREATED_AT
    order: SortOrder = SortOrder.DESC

    def count_key(self) -> str:
        """Names the set of contacts these filters match, whatever their order: a cache key."""
        search = None if self.search is None else fold(self.search)
        return cache_key("contacts:count", [search, self.owner_id])


_organizations = Organization.__table__.c
_VERSION = select(_organizations.contacts_version).where(
    _organizations.id == bindparam("organization_id")
)
_BUMP_VERSION = (
    update(Organization)
    .where(Organization.id == bindparam("organization_id"))
    .values(contacts_version=Organization.contacts_version + 1)
    .execution_options(synchronize_session=False)
)


class ContactRepository(TenantRepository):
    async def get(self, contact_id: int, *, lock: RowLock | None = None) -> Contact | None:
        query = select(Contact).where(
            Contact.organization_id == self.organization_id, Contact.id == contact_id
        )
        return await self.session.scalar(with_lock(query, lock))

    async def count_matching(self, filters: ContactFilters) -> int:
        return await self.count(self._matching(filters))

    async def list(self, filters: ContactFilters, page: PageParams) -> Sequence[Contact]:
        """One page of the matching contacts; their total is `count_matching(filters)`."""
        return await self.page(self._matching(filters), page)

    def _matching(self, filters: ContactFilters) -> Select[Any]:
        query = select(Contact).where(Contact.organization_id == self.organization_id)
        if filters.search:
            query = query.where(Contact.search_text.contains(fold(filters.search), autoescape=True))
        if filters.owner_id is not None:
            query = query.where(Contact.owner_id == filters.owner_id)
        return sorted_by(query, _ORDER_COLUMNS[filters.order_by], Contact.id, filters.order)

    async def version(self) -> int:
        """Changes with every committed contact write of the organization."""
        version = await self.session.scalar(_VERSION, {"organization_id": self.organization_id})
        return int(version or 0)

    async def bump_version(self) -> None:
        """Called by every contact write, in its transaction."""
        await self.session.execute(_BUMP_VERSION, {"organization_id": self.organization_id})

    async def add(self, contact: Contact) -> Contact:
        contact.organization_id = self.organization_id
        self.session.add(contact)
        await self.session.flush()
        return contact

    async def has_deals(self, contact_id: int) -> bool:
        return bool(
            await self.session.scalar(
                select(
                    exists().where(
                        Deal.organization_id == self.organization_id, Deal.contact_id == contact_id
                    )
                )
            )
        )

    async def delete(self, contact: Contact) -> None:
        await self.session.delete(contact)
        await self.session.flush()
