from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    DefaultPipelineRequired,
    LastStage,
    PermissionDenied,
    PipelineHasDeals,
    PipelineIsDefault,
    PipelineNotFound,
    StageHasDeals,
    StageKeyTaken,
    StageLimitReached,
    StageMoveTargetInvalid,
    StageNotFound,
)
from app.dependencies.auth import OrgContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.schemas.common import MAX_ID
from app.schemas.pipeline import (
    PipelineCreate,
    PipelineRead,
    PipelineUpdate,
    StageAdd,
    StageKey,
    StageUpdate,
)
from app.services.pipelines import PipelineService

router = APIRouter(prefix="/pipelines", tags=["pipelines"], route_class=StrictJSONRoute)

PipelineId = Annotated[int, Path(ge=1, le=MAX_ID)]
StageKeyPath = Annotated[StageKey, Path(description="The stage's key.")]


async def get_pipeline_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> PipelineService:
    return PipelineService(session, ctx, resources.cache)


ServiceDep = Annotated[PipelineService, Depends(get_pipeline_service)]


@router.get("", summary="List pipelines with their stages", responses=problems(*TENANT_ERRORS))
async def list_pipelines(service: ServiceDep) -> list[PipelineRead]:
    """Every pipeline of the organization, oldest first, each with its stages in position
    order. Exactly one is the default (`is_default`): where deals go when none is named."""
    return await service.all()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a pipeline",
    responses=problems(*TENANT_ERRORS, PermissionDenied),
)
async def create_pipeline(body: PipelineCreate, service: ServiceDep) -> PipelineRead:
    """Owners and admins. At least one stage; positions follow the list's order (the first
    is where new deals start). Stage keys are unique in the pipeline and never change. The new
    pipeline is not the default: `PATCH` it with `is_default: true` to make it so."""
    return await service.create(body)


@router.get(
    "/{pipeline_id}",
    summary="Read a pipeline with its stages",
    responses=problems(*TENANT_ERRORS, PipelineNotFound),
)
async def read_pipeline(pipeline_id: PipelineId, service: ServiceDep) -> PipelineRead:
    return await service.get(pipeline_id)


@router.patch(
    "/{pipeline_id}",
    summary="Rename a pipeline, or make it the default",
    responses=problems(*TENANT_ERRORS, DefaultPipelineRequired, PermissionDenied, PipelineNotFound),
)
async def update_pipeline(
    pipeline_id: PipelineId, body: PipelineUpdate, service: ServiceDep
) -> PipelineRead:
    """Owners and admins. `is_default: true` makes it the default and the former default an
    ordinary pipeline, in one change; `is_default: false` on the default is refused (400
    `DEFAULT_PIPELINE_REQUIRED`): an organization always has one."""
    return await service.update(pipeline_id, body)


@router.delete(
    "/{pipeline_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a pipeline",
    responses=problems(
        *TENANT_ERRORS, PermissionDenied, PipelineNotFound, PipelineIsDefault, PipelineHasDeals
    ),
)
async def delete_pipeline(pipeline_id: PipelineId, service: ServiceDep) -> Response:
    """Owners and admins. 409 `PIPELINE_IS_DEFAULT` for the default pipeline, 409
    `PIPELINE_HAS_DEALS` while deals are in it, those in the trash included (they may be
    restored): move them to another pipeline first."""
    await service.delete(pipeline_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{pipeline_id}/stages",
    status_code=status.HTTP_201_CREATED,
    summary="Add a stage to a pipeline",
    responses=problems(
        *TENANT_ERRORS, PermissionDenied, PipelineNotFound, StageKeyTaken, StageLimitReached
    ),
)
async def add_pipeline_stage(
    pipeline_id: PipelineId, body: StageAdd, service: ServiceDep
) -> PipelineRead:
    """Owners and admins. At `position` (the stages from there on move one place down), or
    last. Answers the pipeline with all its stages."""
    return await service.add_stage(pipeline_id, body)


@router.patch(
    "/{pipeline_id}/stages/{key}",
    summary="Rename, re-weigh or move a stage",
    responses=problems(*TENANT_ERRORS, PermissionDenied, PipelineNotFound, StageNotFound),
)
async def update_pipeline_stage(
    pipeline_id: PipelineId, key: StageKeyPath, body: StageUpdate, service: ServiceDep
) -> PipelineRead:
    """Owners and admins. `position` moves the stage there; the stages between move one
    place to keep positions 0 to n-1. The key never changes: deals at the stage stay at it.
    Moving a stage changes what "backwards" means for the rollback rule from then on."""
    return await service.update_stage(pipeline_id, key, body)


@router.delete(
    "/{pipeline_id}/stages/{key}",
    summary="Delete a stage, moving its deals",
    responses=problems(
        *TENANT_ERRORS,
        StageMoveTargetInvalid,
        PermissionDenied,
        PipelineNotFound,
        StageNotFound,
        StageHasDeals,
        LastStage,
    ),
)
async def delete_pipeline_stage(
    pipeline_id: PipelineId,
    key: StageKeyPath,
    service: ServiceDep,
    move_deals_to: Annotated[
        StageKey | None,
        Query(
            description="Another stage of the same pipeline, where the deals at this one "
            "(live or in the trash) move. Required while there are any (else 409 "
            "`STAGE_HAS_DEALS`)."
        ),
    ] = None,
) -> PipelineRead:
    """Owners and admins. Without deals at the stage, it simply goes. With `move_deals_to`,
    its deals move there in the same change: each live one with a `stage_changed` timeline
    entry and a `deal.updated` event. The last stage of a pipeline cannot be deleted (409
    `LAST_STAGE`). Answers the pipeline with its remaining stages."""
    return await service.delete_stage(pipeline_id, key, move_deals_to)
