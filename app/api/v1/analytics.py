from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import PipelineNotFound
from app.dependencies.auth import (
    OrganizationIdHeader,
    TokenCaller,
    acting_organization,
    bind_tenant,
)
from app.dependencies.db import ResourcesDep, SessionDep
from app.schemas.analytics import DealFunnel, DealSummary
from app.schemas.common import Id
from app.schemas.deal import CurrencyCode
from app.services.analytics import AnalyticsService

router = APIRouter(prefix="/analytics", tags=["analytics"], route_class=StrictJSONRoute)

CurrencyFilter = Annotated[
    CurrencyCode | None, Query(description="Only deals in this ISO 4217 currency.")
]
PipelineFilter = Annotated[
    Id | None,
    Query(
        description="The pipeline (of this organization, else 404 `PIPELINE_NOT_FOUND`); the "
        "default pipeline when left out."
    ),
]
_RESPONSES = problems(*TENANT_ERRORS, PipelineNotFound)
_CACHE_HEADER = {
    "X-Cache": {
        "description": "`HIT` when served from the cache, else `MISS`.",
        "schema": {"type": "string"},
    }
}


async def get_analytics_service(
    request: Request,
    caller: TokenCaller,
    x_organization_id: OrganizationIdHeader,
    session: SessionDep,
    resources: ResourcesDep,
) -> AnalyticsService:
    # The tenant is resolved like `OrgContext` does, in the statement that also reads the
    # analytics data version (`AnalyticsService.open`).
    service = await AnalyticsService.open(
        session, caller, acting_organization(caller, x_organization_id), resources.cache
    )
    bind_tenant(request, service.ctx)
    return service


ServiceDep = Annotated[AnalyticsService, Depends(get_analytics_service)]


@router.get(
    "/deals/summary",
    summary="Deal counts and amounts by status",
    responses={**_RESPONSES, 200: {"headers": _CACHE_HEADER}},
)
async def read_deals_summary(
    service: ServiceDep,
    response: Response,
    days: Annotated[
        int, Query(ge=1, le=365, description="Window for `new_deals_last_n_days`.")
    ] = 30,
    currency: CurrencyFilter = None,
    pipeline_id: PipelineFilter = None,
) -> DealSummary:
    """Of one pipeline's deals (the default pipeline's unless `pipeline_id` is given): counts
    and exact sums per status, totals, the average won amount (0 without won deals), the
    probability-weighted value of the open deals, and the number of deals created in the last
    `days` days. Cached per organization for `ANALYTICS_CACHE_TTL` seconds; any write to the
    organization's deals or pipelines invalidates it."""
    summary, hit = await service.summary(pipeline_id, days, currency)
    response.headers["X-Cache"] = "HIT" if hit else "MISS"
    return summary


@router.get(
    "/deals/funnel",
    summary="Deals per pipeline stage with conversion",
    responses={**_RESPONSES, 200: {"headers": _CACHE_HEADER}},
)
async def read_deals_funnel(
    service: ServiceDep,
    response: Response,
    currency: CurrencyFilter = None,
    pipeline_id: PipelineFilter = None,
) -> DealFunnel:
    """Every stage of the pipeline (the default one unless `pipeline_id` is given: its four
    stages), in position order. `count`: deals at the stage now; `reached`: at this stage or
    a later one; `conversion_from_prev`: `reached` / previous `reached` x 100 (2 decimals),
    null for the first stage or when the previous `reached` is 0."""
    funnel, hit = await service.funnel(pipeline_id, currency)
    response.headers["X-Cache"] = "HIT" if hit else "MISS"
    return funnel
