from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from starlette.responses import StreamingResponse

from app.api.conditional import IfMatch, send_etag
from app.api.cursors import cursor_page
from app.api.exports import ExportQuery, export_response, export_responses
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    CompanyReferenceInvalid,
    ContactHasDeals,
    ContactNotFound,
    CustomFieldOrderNotScrollable,
    InvalidCursor,
    OwnerNotAMember,
    PermissionDenied,
    PreconditionFailed,
)
from app.dependencies.auth import OrganizationIdHeader, OrgContext, TokenCaller
from app.dependencies.db import ResourcesDep, SessionDep
from app.dependencies.filters import CUSTOM_FILTERS_HELP, ContactFilterQuery, ordered
from app.dependencies.pagination import ListWindow
from app.schemas.common import MAX_ID, CursorPage, CursorParams, Page, SortOrder
from app.schemas.contact import ContactCreate, ContactOrderBy, ContactRead, ContactUpdate
from app.schemas.custom_field import CustomFieldOrder, OneOrderError
from app.services.contacts import ContactService
from app.services.cursors import CursorScope
from app.services.exports import CONTACTS

router = APIRouter(prefix="/contacts", tags=["contacts"], route_class=StrictJSONRoute)
# A column of the list, or `cf.<key>`.
ContactOrder = Annotated[ContactOrderBy | CustomFieldOrder, OneOrderError]

ContactId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_contact_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> ContactService:
    return ContactService(session, ctx, resources.cache)


ServiceDep = Annotated[ContactService, Depends(get_contact_service)]


@router.get(
    "",
    summary="List contacts",
    responses=problems(*TENANT_ERRORS, InvalidCursor, CustomFieldOrderNotScrollable),
    description=(
        "Page mode, or cursor mode with `limit` (and `cursor`): see the README."
        "\n\n" + CUSTOM_FILTERS_HELP
    ),
)
async def list_contacts(
    request: Request,
    service: ServiceDep,
    page: ListWindow,
    filtered: ContactFilterQuery,
    order_by: ContactOrder = ContactOrderBy.CREATED_AT,
    order: SortOrder = SortOrder.DESC,
) -> Page[ContactRead] | CursorPage[ContactRead]:
    filters = ordered(filtered, order_by, order)
    if isinstance(page, CursorParams):
        scope = CursorScope(service.ctx.organization_id, "contacts", filters)
        scroll = partial(service.scroll, filters)
        return await cursor_page(request, page, scope, scroll, ContactRead.model_validate)
    items, total = await service.list(filters, page)
    return Page.build(
        [ContactRead.model_validate(c) for c in items], total, page.page, page.page_size
    )


@router.get(
    "/export",
    summary="Export contacts",
    response_class=StreamingResponse,
    responses={**export_responses(CONTACTS), **problems(*TENANT_ERRORS)},
)
async def export_contacts(
    request: Request,
    caller: TokenCaller,
    x_organization_id: OrganizationIdHeader,
    filters: ContactFilterQuery,
    options: ExportQuery,
) -> Response:
    """Every contact the list's filters match (the same filters as `GET /contacts`), as CSV
    (`format=csv`, the default; `bom=true` for Excel) or JSON Lines (`format=jsonl`),
    streamed in id order from one consistent snapshot. The values are the API's. CSV cells
    starting with `=`, `+`, `-`, `@`, a tab or a carriage return are prefixed with `'` so
    that no spreadsheet runs them as formulas: see the README."""
    return await export_response(request, caller, x_organization_id, CONTACTS, filters, options)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a contact",
    responses=problems(*TENANT_ERRORS, CompanyReferenceInvalid),
)
async def create_contact(body: ContactCreate, service: ServiceDep) -> ContactRead:
    """The caller becomes the contact's `owner_id`. `company_id`, if given, must be a company
    of this organization (400 `COMPANY_NOT_FOUND`)."""
    return ContactRead.model_validate(await service.create(body))


@router.get(
    "/{contact_id}", summary="Read a contact", responses=problems(*TENANT_ERRORS, ContactNotFound)
)
async def read_contact(
    contact_id: ContactId, service: ServiceDep, response: Response
) -> ContactRead:
    contact = await service.get(contact_id)
    send_etag(response, contact)
    return ContactRead.model_validate(contact)


@router.patch(
    "/{contact_id}",
    summary="Update a contact",
    responses=problems(
        *TENANT_ERRORS,
        OwnerNotAMember,
        CompanyReferenceInvalid,
        PermissionDenied,
        ContactNotFound,
        PreconditionFailed,
    ),
)
async def update_contact(
    contact_id: ContactId,
    body: ContactUpdate,
    service: ServiceDep,
    if_match: IfMatch,
    response: Response,
) -> ContactRead:
    """Members may change only their own contacts. `owner_id` may be reassigned by managers
    and above, to a member of this organization (else 400 `OWNER_NOT_A_MEMBER`).
    `company_id` must be a company of this organization (400 `COMPANY_NOT_FOUND`); `null`
    takes the contact out of its company."""
    contact = await service.update(contact_id, body, expected=if_match)
    send_etag(response, contact)
    return ContactRead.model_validate(contact)


@router.delete(
    "/{contact_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a contact",
    responses=problems(
        *TENANT_ERRORS, PermissionDenied, ContactNotFound, ContactHasDeals, PreconditionFailed
    ),
)
async def delete_contact(contact_id: ContactId, service: ServiceDep, if_match: IfMatch) -> Response:
    """Moves the contact to the trash (`GET /trash`; restorable for `TRASH_RETENTION_DAYS`).
    409 `CONTACT_HAS_DEALS` while a deal that is not in the trash refers to it."""
    await service.delete(contact_id, expected=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{contact_id}/restore",
    summary="Restore a contact from the trash",
    responses=problems(*TENANT_ERRORS, PermissionDenied, ContactNotFound),
)
async def restore_contact(
    contact_id: ContactId, service: ServiceDep, response: Response
) -> ContactRead:
    """Brings a deleted contact back (404 if it is not in the trash). Who may delete it may
    restore it."""
    contact = await service.restore(contact_id)
    send_etag(response, contact)
    return ContactRead.model_validate(contact)
