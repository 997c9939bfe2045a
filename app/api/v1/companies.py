from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status

from app.api.conditional import IfMatch, send_etag
from app.api.cursors import cursor_page
from app.api.responses import TENANT, TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    CompanyHasContacts,
    CompanyHasDeals,
    CompanyNotFound,
    CustomFieldOrderNotScrollable,
    InvalidCursor,
    OwnerNotAMember,
    PermissionDenied,
    PreconditionFailed,
)
from app.dependencies.auth import OrgContext
from app.dependencies.db import SessionDep
from app.dependencies.filters import CUSTOM_FILTERS_HELP, CompanyFilterQuery, ordered
from app.dependencies.pagination import ListWindow
from app.schemas.common import MAX_ID, CursorPage, CursorParams, Page, SortOrder
from app.schemas.company import CompanyCreate, CompanyOrderBy, CompanyRead, CompanyUpdate
from app.schemas.custom_field import CustomFieldOrder, OneOrderError
from app.services.companies import CompanyService, derived_figures
from app.services.cursors import CursorScope

router = APIRouter(prefix="/companies", tags=["companies"], route_class=StrictJSONRoute)
# A column of the list, or `cf.<key>`.
CompanyOrder = Annotated[CompanyOrderBy | CustomFieldOrder, OneOrderError]

CompanyId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_company_service(session: SessionDep, ctx: OrgContext) -> CompanyService:
    return CompanyService(session, ctx)


ServiceDep = Annotated[CompanyService, Depends(get_company_service)]


def _send_etag(response: Response, company: CompanyRead) -> None:
    send_etag(response, company, *derived_figures(company))


def _same(company: CompanyRead) -> CompanyRead:
    return company


@router.get(
    "",
    summary="List companies",
    responses=problems(*TENANT_ERRORS, InvalidCursor, CustomFieldOrderNotScrollable),
    description=(
        "Each with its counts of contacts and open deals. Page mode, or cursor mode with "
        "`limit` (and `cursor`): see the README."
        "\n\n" + CUSTOM_FILTERS_HELP
    ),
)
async def list_companies(
    request: Request,
    service: ServiceDep,
    page: ListWindow,
    filtered: CompanyFilterQuery,
    order_by: CompanyOrder = CompanyOrderBy.CREATED_AT,
    order: SortOrder = SortOrder.DESC,
) -> Page[CompanyRead] | CursorPage[CompanyRead]:
    filters = ordered(filtered, order_by, order)
    if isinstance(page, CursorParams):
        scope = CursorScope(service.ctx.organization_id, "companies", filters)
        return await cursor_page(request, page, scope, partial(service.scroll, filters), _same)
    items, total = await service.list(filters, page)
    return Page.build(list(items), total, page.page, page.page_size)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a company", responses=TENANT)
async def create_company(body: CompanyCreate, service: ServiceDep) -> CompanyRead:
    """The caller becomes the company's `owner_id`. `domain` is a host name such as
    `acme.com`, stored lower-cased."""
    return await service.create(body)


@router.get(
    "/{company_id}",
    summary="Read a company, with its counts of contacts and open deals",
    responses=problems(*TENANT_ERRORS, CompanyNotFound),
)
async def read_company(
    company_id: CompanyId, service: ServiceDep, response: Response
) -> CompanyRead:
    """`contacts_count`: its contacts; `open_deals_count`: deals naming it that are `new` or
    `in_progress` (neither counts records in the trash). The `ETag` changes with them too."""
    company = await service.get(company_id)
    _send_etag(response, company)
    return company


@router.patch(
    "/{company_id}",
    summary="Update a company",
    responses=problems(
        *TENANT_ERRORS, OwnerNotAMember, PermissionDenied, CompanyNotFound, PreconditionFailed
    ),
)
async def update_company(
    company_id: CompanyId,
    body: CompanyUpdate,
    service: ServiceDep,
    if_match: IfMatch,
    response: Response,
) -> CompanyRead:
    """Members may change only their own companies. `owner_id` may be reassigned by managers
    and above, to a member of this organization (else 400 `OWNER_NOT_A_MEMBER`). `null`
    clears `domain`, `phone` and `address`."""
    company = await service.update(company_id, body, expected=if_match)
    _send_etag(response, company)
    return company


@router.delete(
    "/{company_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a company",
    responses=problems(
        *TENANT_ERRORS,
        PermissionDenied,
        CompanyNotFound,
        CompanyHasContacts,
        CompanyHasDeals,
        PreconditionFailed,
    ),
)
async def delete_company(company_id: CompanyId, service: ServiceDep, if_match: IfMatch) -> Response:
    """Deletes the company for good (companies have no trash). 409 `COMPANY_HAS_CONTACTS`
    while a contact belongs to it, 409 `COMPANY_HAS_DEALS` while a deal names it (records in
    the trash do not count: they lose the company)."""
    await service.delete(company_id, expected=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
