from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.dependencies.auth import OrgContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.dependencies.pagination import Pagination
from app.schemas.common import Page
from app.schemas.trash import TrashItem, TrashType
from app.services.trash import TrashService

router = APIRouter(prefix="/trash", tags=["trash"], route_class=StrictJSONRoute)


async def get_trash_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> TrashService:
    return TrashService(session, ctx, resources.settings.TRASH_RETENTION_DAYS)


ServiceDep = Annotated[TrashService, Depends(get_trash_service)]


@router.get("", summary="List the trash", responses=problems(*TENANT_ERRORS))
async def list_trash(
    service: ServiceDep,
    page: Pagination,
    type_: Annotated[
        TrashType | None, Query(alias="type", description="Only contacts, deals or tasks.")
    ] = None,
) -> Page[TrashItem]:
    """Deleted contacts, deals and tasks of the organization, most recently deleted first,
    each with when it was deleted, when it will be purged for good
    (`TRASH_RETENTION_DAYS` later) and the record as it was. A deal's tasks that went to the
    trash with it are listed too. `POST /{contacts|deals|tasks}/{id}/restore` brings one
    back."""
    items, total = await service.list(type_, page)
    return Page.build(items, total, page.page, page.page_size)
