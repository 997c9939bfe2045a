"""Queries of duplicates and merge: groups of contacts sharing a match key, and the rows a
merge locks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, select, union_all
from sqlalchemy.orm import aliased

from app.models import Contact, Deal
from app.repositories.base import TenantRepository, live
from app.schemas.common import PageParams
from app.schemas.contact_merge import MatchReason

_KEY_COLUMNS = {MatchReason.EMAIL: Contact.email_key, MatchReason.PHONE: Contact.phone_key}


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    reason: MatchReason
    key: str
    count: int


class ContactMergeRepository(TenantRepository):
    def _contacts(self) -> ColumnElement[bool]:
        """Which contacts duplicates and merges see: the organization's live ones, not those in
        the trash (every query here starts from this one condition)."""
        return and_(Contact.organization_id == self.organization_id, live(Contact))

    async def count_groups(self) -> int:
        return await self.count(self._groups())

    async def group_page(self, page: PageParams) -> tuple[list[DuplicateKey], int | None]:
        """One page of the keys shared by two or more contacts (email keys, then phone keys,
        each in key order) and how many such keys there are (None when the page is past the
        end). Each half is a scan of one `(organization_id, key)` index; the total is counted
        in the same pass (a window over the groups), not by grouping all over again."""
        groups = self._groups().subquery()
        rows = await self.session.execute(
            select(groups.c.reason, groups.c.key, groups.c.size, func.count().over().label("total"))
            .order_by(groups.c.reason, groups.c.key)
            .limit(page.page_size)
            .offset(page.offset)
        )
        found = rows.all()
        keys = [DuplicateKey(MatchReason(row.reason), row.key, row.size) for row in found]
        return keys, (found[0].total if found else None)

    def _groups(self) -> Select[Any]:
        halves = [
            select(
                literal(reason.value).label("reason"),
                column.label("key"),
                func.count().label("size"),
            )
            .where(self._contacts(), column.is_not(None))
            .group_by(column)
            .having(func.count() > 1)
            for reason, column in _KEY_COLUMNS.items()
        ]
        union = union_all(*halves).subquery()
        return select(union.c.reason, union.c.key, union.c.size)

    async def group_members(
        self, reason: MatchReason, keys: Sequence[str], limit: int
    ) -> dict[str, list[Contact]]:
        """The first `limit` contacts (by id) of each of these keys."""
        if not keys:
            return {}
        column = _KEY_COLUMNS[reason]
        ranked = (
            select(
                Contact,
                func.row_number().over(partition_by=column, order_by=Contact.id).label("rank"),
            )
            .where(self._contacts(), column.in_(keys))
            .subquery()
        )
        contact = aliased(Contact, ranked)
        rows = await self.session.scalars(
            select(contact).where(ranked.c.rank <= limit).order_by(ranked.c.id)
        )
        members: dict[str, list[Contact]] = {key: [] for key in keys}
        for row in rows:
            key = row.email_key if reason is MatchReason.EMAIL else row.phone_key
            if key in members:
                members[key].append(row)
        return members

    async def lock_contacts(self, contact_ids: Sequence[int]) -> dict[int, Contact]:
        """These contacts (those that exist in the organization), locked for update in id
        order: two merges over the same contacts queue up rather than deadlock."""
        rows = await self.session.scalars(
            select(Contact)
            .where(self._contacts(), Contact.id.in_(contact_ids))
            .order_by(Contact.id)
            .with_for_update()
        )
        return {contact.id: contact for contact in rows}

    async def lock_deals_of(self, contact_ids: Sequence[int]) -> list[Deal]:
        """The live deals of these contacts, locked for update in id order (deals in the trash
        stay with their contact, and go where it goes)."""
        rows = await self.session.scalars(
            select(Deal)
            .where(
                Deal.organization_id == self.organization_id,
                live(Deal),
                Deal.contact_id.in_(contact_ids),
            )
            .order_by(Deal.id)
            .with_for_update()
        )
        return list(rows)
