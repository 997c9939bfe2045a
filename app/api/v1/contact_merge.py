"""Duplicate contacts and merging them (`/contacts/duplicates`, `/contacts/{id}/merge`).

Included before the contacts' router, so that `/contacts/duplicates` is not read as
`/contacts/{contact_id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.api.conditional import IfMatch, send_etag
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.api.v1.contacts import ContactId
from app.core.errors import (
    ContactHasDeals,
    ContactNotFound,
    MergeIntoItself,
    MergeSourceNotFound,
    PermissionDenied,
    PreconditionFailed,
)
from app.dependencies.auth import OrgContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.dependencies.pagination import Pagination
from app.schemas.common import Page
from app.schemas.contact import ContactRead
from app.schemas.contact_merge import (
    MAX_GROUP_CONTACTS,
    ContactMerge,
    ContactMergeResult,
    DuplicateGroup,
)
from app.services.contact_merge import ContactMergeService

router = APIRouter(prefix="/contacts", tags=["contacts"], route_class=StrictJSONRoute)


async def get_merge_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> ContactMergeService:
    return ContactMergeService(session, ctx, resources.cache)


ServiceDep = Annotated[ContactMergeService, Depends(get_merge_service)]


@router.get(
    "/duplicates",
    summary="List duplicate contacts",
    description="Groups of contacts of this organization that share a normalised email "
    "(trimmed, case-folded) or a normalised phone (E.164 where it parses, with "
    "`DEFAULT_PHONE_REGION` for numbers without a country code; else its digits). Email "
    "groups come first, then phone groups, each in key order. A contact with both a shared "
    f"email and a shared phone is in two groups. Each group lists up to {MAX_GROUP_CONTACTS} "
    "contacts, lowest id first; `count` says how many share the key.",
    responses=problems(*TENANT_ERRORS),
)
async def list_duplicate_contacts(service: ServiceDep, page: Pagination) -> Page[DuplicateGroup]:
    groups, total = await service.duplicates(page)
    items = [
        DuplicateGroup(
            key=group.key.key,
            reason=group.key.reason,
            count=group.key.count,
            contacts=[ContactRead.model_validate(contact) for contact in group.contacts],
        )
        for group in groups
    ]
    return Page.build(items, total, page.page, page.page_size)


@router.post(
    "/{contact_id}/merge",
    summary="Merge duplicate contacts into this one",
    responses=problems(
        *TENANT_ERRORS,
        MergeIntoItself,
        PermissionDenied,
        ContactNotFound,
        MergeSourceNotFound,
        ContactHasDeals,
        PreconditionFailed,
    ),
)
async def merge_contacts(
    contact_id: ContactId,
    body: ContactMerge,
    service: ServiceDep,
    if_match: IfMatch,
    response: Response,
) -> ContactMergeResult:
    """Folds the contacts of `source_ids` into this one, all or nothing: their deals move
    here (each gets a `contact_merged` timeline entry and a `deal.updated` event), this
    contact's empty `email`/`phone` are filled from them (first non-empty in `source_ids`
    order), and they are deleted (`contact.deleted` each).

    Members may merge only their own contacts with their own deals; managers and above any.
    A source that is missing or another organization's is 404; the target among the sources
    400 `MERGE_TARGET_IN_SOURCES`. `If-Match` is checked against this contact."""
    outcome = await service.merge(contact_id, body.source_ids, expected=if_match)
    send_etag(response, outcome.contact)
    return ContactMergeResult(
        contact=ContactRead.model_validate(outcome.contact),
        merged_contact_ids=outcome.merged_contact_ids,
        moved_deal_ids=outcome.moved_deal_ids,
        filled_fields=outcome.filled_fields,
    )
