from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    Row,
    Select,
    Table,
    Text,
    any_,
    bindparam,
    exists,
    func,
    insert,
    select,
)

from app.core.text import fold
from app.db.types import utcnow
from app.models import Contact, Deal
from app.repositories import custom_fields
from app.repositories.base import RowLock, TenantRepository, live, sorted_by, with_lock
from app.repositories.cursor import KeyOrder, Keyset, scroll
from app.repositories.custom_fields import CustomFieldFilter
from app.repositories.trash import put_in_trash
from app.schemas.common import PageParams, SortOrder
from app.schemas.contact import ContactOrderBy

_ORDER_COLUMNS = {ContactOrderBy.CREATED_AT: Contact.created_at, ContactOrderBy.NAME: Contact.name}


@dataclass(frozen=True, slots=True)
class ContactFilters:
    search: str | None = None
    owner_id: int | None = None
    company_id: int | None = None
    order_by: ContactOrderBy = ContactOrderBy.CREATED_AT
    order: SortOrder = SortOrder.DESC
    # `cf.<key>` filters, and `order_by=cf.<key>` (which then replaces `order_by`).
    custom: tuple[CustomFieldFilter, ...] = ()
    custom_order: str | None = None


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

    async def export_batch(
        self, filters: ContactFilters, fields: Sequence[str], after_id: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        """An export's next batch: up to `limit` matching contacts after `after_id`, in id
        order, as rows of the columns `fields`. The filters (and their sort, ignored) are the
        list's own, so an export answers what the list does."""
        return await self.id_batch(self._matching(filters), Contact.id, fields, after_id, limit)

    def _matching(self, filters: ContactFilters) -> Select[Any]:
        query = self.live_rows(Contact)
        if filters.search:
            query = query.where(Contact.search_text.contains(fold(filters.search), autoescape=True))
        if filters.owner_id is not None:
            query = query.where(Contact.owner_id == filters.owner_id)
        if filters.company_id is not None:
            query = query.where(Contact.company_id == filters.company_id)
        dialect = self.session.get_bind().dialect.name
        query = custom_fields.matching(query, Contact, filters.custom, dialect)
        if filters.custom_order is not None:
            descending = filters.order is SortOrder.DESC
            order = custom_fields.custom_sort(
                Contact, filters.custom_order, dialect, descending=descending
            )
            return query.order_by(*order)
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

    async def by_emails(
        self, emails: Collection[str], *, lock: RowLock | None = None
    ) -> Sequence[Contact]:
        """The contacts whose email is one of `emails` (lower-cased), case-insensitively;
        oldest first (several contacts may share an email)."""
        if not emails:
            return []
        lowered = func.lower(Contact.email)
        if self.session.get_bind().dialect.name == "postgresql":
            # One array parameter: the same statement (prepared once) whatever the count.
            matches = lowered == any_(bindparam("emails", sorted(emails), type_=ARRAY(Text())))
        else:
            matches = lowered.in_(sorted(emails))
        query = self.live_rows(Contact).where(matches).order_by(Contact.id)
        return (await self.session.scalars(with_lock(query, lock))).all()

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> Sequence[dict[str, Any]]:
        """Insert `rows` (column values) in one statement; each row with the columns the
        database gave it (id, timestamps), in the rows' order."""
        if not rows:
            return []
        now = utcnow()
        values = [
            {**row, "organization_id": self.organization_id, "created_at": now, "updated_at": now}
            for row in rows
        ]
        result = await self.session.execute(_INSERT_RETURNING, values)
        return [
            {**row, "id": contact_id}
            for row, contact_id in zip(values, result.scalars(), strict=True)
        ]


_contacts = cast(Table, Contact.__table__)
_INSERT_RETURNING = insert(_contacts).returning(_contacts.c.id, sort_by_parameter_order=True)
