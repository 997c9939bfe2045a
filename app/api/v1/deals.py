from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from starlette.responses import StreamingResponse

from app.api.conditional import IfMatch, send_etag
from app.api.cursors import cursor_page
from app.api.exports import ExportQuery, export_response, export_responses
from app.api.rendering import rendered
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    CompanyReferenceInvalid,
    ContactInTrash,
    ContactReferenceInvalid,
    CustomFieldOrderNotScrollable,
    DealNotFound,
    DealWonRequiresAmount,
    InvalidCursor,
    OwnerNotAMember,
    PermissionDenied,
    PipelineReferenceInvalid,
    PreconditionFailed,
    StageNotInPipeline,
    StageRollbackForbidden,
)
from app.dependencies.auth import (
    OrganizationIdHeader,
    OrgContext,
    TokenCaller,
    acting_organization,
    bind_tenant,
)
from app.dependencies.db import ResourcesDep, SessionDep, resources_of
from app.dependencies.filters import CUSTOM_FILTERS_HELP, DealFilterQuery, ordered
from app.dependencies.pagination import ListWindow
from app.schemas.activity import ActivityCreate, ActivityRead
from app.schemas.common import (
    MAX_ID,
    CursorPage,
    CursorParams,
    Page,
    SortOrder,
)
from app.schemas.custom_field import CustomFieldOrder, OneOrderError
from app.schemas.deal import DealCreate, DealOrderBy, DealRead, DealUpdate
from app.services.activities import ActivityService
from app.services.cursors import CursorScope
from app.services.deals import DealService
from app.services.exports import DEALS

router = APIRouter(prefix="/deals", tags=["deals"], route_class=StrictJSONRoute)
# A column of the list, or `cf.<key>`.
DealOrder = Annotated[DealOrderBy | CustomFieldOrder, OneOrderError]

DealId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_deal_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> DealService:
    return DealService(session, ctx, resources.cache)


async def get_activity_service(session: SessionDep, ctx: OrgContext) -> ActivityService:
    return ActivityService(session, ctx)


ServiceDep = Annotated[DealService, Depends(get_deal_service)]
ActivityServiceDep = Annotated[ActivityService, Depends(get_activity_service)]


@router.get(
    "",
    summary="List deals",
    responses=problems(*TENANT_ERRORS, InvalidCursor, CustomFieldOrderNotScrollable),
    description=(
        "Filters combine with AND; `min_amount`/`max_amount` are inclusive. The last sort "
        "key is always `id`, so paging is stable. With `limit` (and `cursor`), cursor "
        "mode: see the README."
        "\n\n" + CUSTOM_FILTERS_HELP
    ),
)
async def list_deals(
    request: Request,
    service: ServiceDep,
    page: ListWindow,
    filtered: DealFilterQuery,
    order_by: DealOrder = DealOrderBy.CREATED_AT,
    order: SortOrder = SortOrder.DESC,
) -> Page[DealRead] | CursorPage[DealRead]:
    filters = ordered(filtered, order_by, order)
    if isinstance(page, CursorParams):
        scope = CursorScope(service.ctx.organization_id, "deals", filters)
        return await cursor_page(request, page, scope, partial(service.scroll, filters), _deal)
    items, total = await service.list(filters, page)
    return Page.build([_deal(d) for d in items], total, page.page, page.page_size)


@router.get(
    "/export",
    summary="Export deals",
    response_class=StreamingResponse,
    responses={**export_responses(DEALS), **problems(*TENANT_ERRORS)},
)
async def export_deals(
    request: Request,
    caller: TokenCaller,
    x_organization_id: OrganizationIdHeader,
    filters: DealFilterQuery,
    options: ExportQuery,
) -> Response:
    """Every deal the list's filters match (the same filters as `GET /deals`), as CSV
    (`format=csv`, the default; `bom=true` for Excel) or JSON Lines (`format=jsonl`),
    streamed in id order from one consistent snapshot. The values are the API's. CSV cells
    starting with `=`, `+`, `-`, `@`, a tab or a carriage return are prefixed with `'` so
    that no spreadsheet runs them as formulas: see the README."""
    return await export_response(request, caller, x_organization_id, DEALS, filters, options)


def _deal(deal: object) -> DealRead:
    return DealRead.model_validate(deal)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a deal",
    responses=problems(
        *TENANT_ERRORS, ContactReferenceInvalid, CompanyReferenceInvalid, PipelineReferenceInvalid
    ),
)
async def create_deal(body: DealCreate, service: ServiceDep) -> DealRead:
    """Starts as `new`, at the first stage of its pipeline: `pipeline_id`, or the default
    pipeline (whose first stage is `qualification`). The caller becomes `owner_id`.
    `contact_id` must be a contact of this organization (400 `CONTACT_NOT_FOUND`),
    `company_id`, if given, a company of it (400 `COMPANY_NOT_FOUND`), and `pipeline_id` a
    pipeline of it (400 `PIPELINE_NOT_FOUND`)."""
    return DealRead.model_validate(await service.create(body))


@router.get(
    "/{deal_id}",
    summary="Read a deal",
    response_model=DealRead,
    responses=problems(*TENANT_ERRORS, DealNotFound),
)
async def read_deal(
    deal_id: DealId,
    request: Request,
    caller: TokenCaller,
    x_organization_id: OrganizationIdHeader,
) -> Response:
    # The tenant is resolved as `OrgContext` does, by the statement that also reads the deal
    # (`DealService.read_as_member`); no session dependency, no resources dependency.
    ctx, deal = await DealService.read_as_member(
        resources_of(request).read_engine,
        caller,
        acting_organization(caller, x_organization_id),
        deal_id,
    )
    bind_tenant(request, ctx)
    if deal is None:
        raise DealNotFound()
    # Validated once, from the row, and rendered by pydantic: returned as a `DealRead`,
    # FastAPI would validate it again against the response model and render it twice
    # (to a dict, then through `json.dumps`). The bytes are the same.
    answer = rendered(DealRead.model_validate(deal))
    send_etag(answer, deal)
    return answer


@router.patch(
    "/{deal_id}",
    summary="Update a deal",
    responses=problems(
        *TENANT_ERRORS,
        DealWonRequiresAmount,
        OwnerNotAMember,
        ContactReferenceInvalid,
        CompanyReferenceInvalid,
        PipelineReferenceInvalid,
        StageNotInPipeline,
        PermissionDenied,
        StageRollbackForbidden,
        DealNotFound,
        PreconditionFailed,
    ),
)
async def update_deal(
    deal_id: DealId, body: DealUpdate, service: ServiceDep, if_match: IfMatch, response: Response
) -> DealRead:
    """Partial update, checked against the values the deal will have afterwards:
    `won` needs `amount > 0` (400 `DEAL_WON_REQUIRES_AMOUNT`); `stage` must be a stage of the
    deal's pipeline (400 `STAGE_NOT_IN_PIPELINE`; a key of no pipeline of the organization:
    422); moving it backwards (to a lower position) needs owner or admin (403
    `STAGE_ROLLBACK_FORBIDDEN`); `pipeline_id` moves the deal to another pipeline of the
    organization (400 `PIPELINE_NOT_FOUND`), to `stage` or else that pipeline's first stage,
    and is backwards when the new stage's position is lower; members change only their own
    deals;
    `owner_id` only by managers and above, to a member (400 `OWNER_NOT_A_MEMBER`);
    `company_id` only to a company of this organization (400 `COMPANY_NOT_FOUND`), `null`
    for none.
    Each real change of `status` or `stage` appends to the deal's timeline."""
    deal = await service.update(deal_id, body, expected=if_match)
    send_etag(response, deal)
    return DealRead.model_validate(deal)


@router.delete(
    "/{deal_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a deal with its tasks and timeline",
    responses=problems(*TENANT_ERRORS, PermissionDenied, DealNotFound, PreconditionFailed),
)
async def delete_deal(deal_id: DealId, service: ServiceDep, if_match: IfMatch) -> Response:
    """Moves the deal, its tasks and its timeline to the trash (`GET /trash`; restorable for
    `TRASH_RETENTION_DAYS`); it leaves lists and analytics at once."""
    await service.delete(deal_id, expected=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{deal_id}/restore",
    summary="Restore a deal from the trash",
    responses=problems(*TENANT_ERRORS, PermissionDenied, DealNotFound, ContactInTrash),
)
async def restore_deal(deal_id: DealId, service: ServiceDep, response: Response) -> DealRead:
    """Brings a deleted deal back with the tasks deleted with it and its timeline (404 if it
    is not in the trash). Who may delete it may restore it. Its contact must not be in the
    trash: 409 `CONTACT_IN_TRASH` (restore the contact first)."""
    deal = await service.restore(deal_id)
    send_etag(response, deal)
    return DealRead.model_validate(deal)


@router.get(
    "/{deal_id}/activities",
    summary="The deal's timeline, newest first",
    responses=problems(*TENANT_ERRORS, DealNotFound, InvalidCursor),
)
async def list_deal_activities(
    request: Request, deal_id: DealId, service: ActivityServiceDep, page: ListWindow
) -> Page[ActivityRead] | CursorPage[ActivityRead]:
    """Page mode, or cursor mode with `limit` (and `cursor`)."""
    if isinstance(page, CursorParams):
        scope = CursorScope(service.ctx.organization_id, f"activities:{deal_id}")
        scroll = partial(service.scroll_for_deal, deal_id)
        return await cursor_page(request, page, scope, scroll, ActivityRead.model_validate)
    items, total = await service.list_for_deal(deal_id, page)
    return Page.build(
        [ActivityRead.model_validate(a) for a in items], total, page.page, page.page_size
    )


@router.post(
    "/{deal_id}/activities",
    status_code=status.HTTP_201_CREATED,
    summary="Comment on a deal",
    responses=problems(*TENANT_ERRORS, PermissionDenied, DealNotFound),
)
async def create_deal_activity(
    deal_id: DealId, body: ActivityCreate, service: ActivityServiceDep
) -> ActivityRead:
    """Only `{"type": "comment", "payload": {"text": "..."}}`; any member may comment."""
    return ActivityRead.model_validate(await service.comment(deal_id, body))
