from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select

from app.core.text import fold
from app.models import Contact, Deal
from app.repositories.base import RowLock, TenantRepository, live, sorted_by, with_lock
from app.repositories.cursor import KeyOrder, Keyset, scroll
from app.repositories.trash import put_in_trash
from app.schemas.common import PageParams, SortOrder
from app.schemas.contact import ContactOrderBy

_ORDER_COLUMNS = {ContactOrderBy.CREATED_AT: Contact.created_at, ContactOrderBy.NAME: Contact.name}


@dataclass(frozen=True, slots=True)
class ContactFilters:
    search: str | None = None
    owner_id: int | None = None
    order_by: ContactOrderBy = ContactOrderBy.CREATED_AT
    order: SortOrder = SortOrder.DESC


class ContactRepository(TenantRepository):
    async def get(self, contact_id: int, *, lock: RowLock | None = None) -> Contact | None:
        query = self.live_rows(Contact).where(Contact.id == contact_id)
        return await self.session.scalar(with_lock(query, lock))

    async def count_matching(self, filters: ContactFilters) -> int:
        return await self.count(self._matching(filters))

    async def list(self, filters: ContactFilters, page: PageParams) -> Sequence[Contact]:
        """One page of the matching contacts; their total is `count_matching(filters)`."""
        return await self.page(self._matching(filters), page)

    async def scroll(
        self, filters: ContactFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Contact], Keyset | None]:
        """Up to `limit` matching contacts after `after`, and where the next page starts."""
        order = KeyOrder(
            _ORDER_COLUMNS[filters.order_by],
            Contact.id,
            descending=filters.order is SortOrder.DESC,
        )
        return await scroll(self.session, self._matching(filters), order, after, limit)

    def _matching(self, filters: ContactFilters) -> Select[Any]:
        query = self.live_rows(Contact)
        if filters.search:
            query = query.where(Contact.search_text.contains(fold(filters.search), autoescape=True))
        if filters.owner_id is not None:
            query = query.where(Contact.owner_id == filters.owner_id)
        return sorted_by(query, _ORDER_COLUMNS[filters.order_by], Contact.id, filters.order)

    async def add(self, contact: Contact) -> Contact:
        contact.organization_id = self.organization_id
        self.session.add(contact)
        await self.session.flush()
        return contact

    async def has_deals(self, contact_id: int) -> bool:
        """Whether a live deal refers to the contact (deals in the trash do not count)."""
        return bool(
            await self.session.scalar(
                select(
                    exists().where(
                        Deal.organization_id == self.organization_id,
                        Deal.contact_id == contact_id,
                        live(Deal),
                    )
                )
            )
        )

    async def trash(self, contact: Contact, at: datetime) -> None:
        put_in_trash(contact, at)
        await self.session.flush()
