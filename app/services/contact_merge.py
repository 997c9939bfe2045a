"""Duplicate contacts and merging them.

**Duplicates** are contacts of one organization with an equal match key: the normalised email
or phone (`app.core.contact_keys`), stored on each contact by its writes and indexed, so the
groups are read from an index, however many contacts there are.

**Merge** folds duplicates (the sources) into one contact (the target), in one transaction:
every deal of a source moves to the target (a `deal.updated` event and a `contact_merged`
timeline entry each), the target's empty fields and missing custom field values are filled
from the sources (first value in `source_ids` order; `contact.updated` if any was), and each
source is deleted through the contacts' own delete path (its `contact.deleted` event, and
whatever deleting a contact means there). A refusal anywhere rolls all of it back.

Who may merge: whoever may change the target and delete every source and change every deal
that moves (CONTRACT section 3): managers and above always; a member only when all of them
are their own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.errors import ContactNotFound, MergeIntoItself, MergeSourceNotFound
from app.core.tenancy import TenantContext
from app.core.versioning import ExpectedVersion, ensure_version
from app.models import ActivityType, Contact, CustomFieldEntity
from app.repositories.activities import ActivityRepository
from app.repositories.base import RowLock
from app.repositories.contact_merge import ContactMergeRepository, DuplicateKey
from app.schemas.common import PageParams
from app.schemas.contact import ContactUpdate
from app.schemas.contact_merge import MAX_GROUP_CONTACTS, MatchReason
from app.schemas.deal import DealUpdate
from app.services import custom_fields
from app.services.contacts import ContactService
from app.services.deals import DealService
from app.services.policies import ensure_can_modify

# The target's fields a merge may fill, when empty there (`name` is never empty).
FILLABLE_FIELDS = ("email", "phone", "company_id")


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    key: DuplicateKey
    contacts: Sequence[Contact]


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    contact: Contact
    merged_contact_ids: list[int]
    moved_deal_ids: list[int]
    filled_fields: list[str]


class ContactMergeService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, cache: Cache) -> None:
        self.session = session
        self.ctx = ctx
        self.repository = ContactMergeRepository(session, ctx.organization_id)
        self.activities = ActivityRepository(session, ctx.organization_id)
        self.contacts = ContactService(session, ctx, cache)
        self.deals = DealService(session, ctx, cache)

    async def duplicates(self, page: PageParams) -> tuple[list[DuplicateGroup], int]:
        """A page of duplicate groups (email keys first, then phone keys, each in key order)
        and how many groups there are."""
        keys, total = await self.repository.group_page(page)
        if total is None:  # a page past the end: the total still counts
            total = await self.repository.count_groups()
        groups: list[DuplicateGroup] = []
        members: dict[MatchReason, dict[str, list[Contact]]] = {}
        for reason in MatchReason:
            of_reason = [key.key for key in keys if key.reason is reason]
            members[reason] = await self.repository.group_members(
                reason, of_reason, MAX_GROUP_CONTACTS
            )
        for key in keys:
            groups.append(DuplicateGroup(key, members[key.reason][key.key]))
        return groups, total

    async def merge(
        self,
        target_id: int,
        source_ids: Sequence[int],
        *,
        expected: ExpectedVersion | None = None,
    ) -> MergeOutcome:
        if target_id in source_ids:
            raise MergeIntoItself()
        # The sources' deals are locked before the contacts, in the order a deal PATCH takes
        # its locks (deal, then contact): a merge and a PATCH moving one of these deals queue
        # up instead of deadlocking. A deal attached to a source in between makes the
        # source's delete refuse (409 `CONTACT_HAS_DEALS`), with nothing changed.
        # The contacts' custom field definitions before anything, as every write that may
        # store values takes them (the target may be filled with the sources' values).
        await custom_fields.definitions_of(
            self.session, self.ctx.organization_id, CustomFieldEntity.CONTACT, lock=RowLock.SHARE
        )
        deals = await self.repository.lock_deals_of(source_ids)
        contacts = await self.repository.lock_contacts([target_id, *source_ids])
        target = contacts.get(target_id)
        if target is None:
            raise ContactNotFound()
        for source_id in source_ids:
            if source_id not in contacts:
                raise MergeSourceNotFound(f"Contact {source_id} in source_ids was not found.")
        for contact in contacts.values():
            ensure_can_modify(self.ctx, contact.owner_id, "contacts")
        ensure_version(expected, target.id, target.updated_at)

        for deal in deals:
            from_contact_id = deal.contact_id
            await self.deals.update(deal.id, DealUpdate(contact_id=target.id))
            await self.activities.add(
                deal.id,
                ActivityType.CONTACT_MERGED,
                {"from_contact_id": from_contact_id, "to_contact_id": target.id},
                self.ctx.user_id,
                self.ctx.api_key_id,
            )

        fills = _fills(target, [contacts[source_id] for source_id in source_ids])
        if fills:
            # Not validated again: the values are the sources' own, validated when written.
            update = ContactUpdate.model_construct(_fields_set=set(fills), **fills)
            target = await self.contacts.update(target.id, update)
        for source_id in source_ids:
            await self.contacts.delete(source_id)
        return MergeOutcome(
            contact=target,
            merged_contact_ids=list(source_ids),
            moved_deal_ids=[deal.id for deal in deals],
            filled_fields=list(fills),
        )


def _fills(target: Contact, sources: Sequence[Contact]) -> dict[str, Any]:
    """The target's empty fields, each with the first non-empty value among the sources; and
    its custom fields without a value, likewise (`custom_fields`: those values only)."""
    fills: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for source in sources:
        for key, value in source.custom_fields.items():
            if key not in target.custom_fields:
                custom.setdefault(key, value)
    if custom:
        fills["custom_fields"] = custom
    for field in FILLABLE_FIELDS:
        if getattr(target, field):
            continue
        for source in sources:
            value = getattr(source, field)
            if value:
                fills[field] = value
                break
    return fills
