from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.api.idempotency import not_idempotent
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import ApiKeyNotFound, PermissionDenied
from app.dependencies.auth import PathOrgContext
from app.dependencies.db import SessionDep
from app.dependencies.pagination import Pagination
from app.schemas.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.schemas.common import MAX_ID, Page
from app.services.api_keys import ApiKeyService

router = APIRouter(
    prefix="/organizations/{organization_id}/api-keys",
    tags=["api keys"],
    route_class=StrictJSONRoute,
)

ApiKeyId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_api_key_service(session: SessionDep, ctx: PathOrgContext) -> ApiKeyService:
    return ApiKeyService(session, ctx)


ServiceDep = Annotated[ApiKeyService, Depends(get_api_key_service)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied),
)
@not_idempotent  # the answer holds the secret: it is never kept for a replay
async def create_api_key(body: ApiKeyCreate, service: ServiceDep) -> ApiKeyCreated:
    """A machine credential for this organization, acting with `role` (`admin`, `manager` or
    `member`, never above your own: 403). `key` is in this answer only: store it now.
    Send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`; `X-Organization-Id` may
    then be left out. People only: an API key cannot create, list or revoke keys (403)."""
    return await service.create(body)


@router.get("", summary="List the API keys (owner, admin)", responses=problems(401, 403, 422))
async def list_api_keys(service: ServiceDep, page: Pagination) -> Page[ApiKeyRead]:
    """Keys not revoked, newest first, without their secrets: `prefix` (the key's first
    characters) tells them apart."""
    items, total = await service.list(page)
    return Page.build(
        [ApiKeyRead.model_validate(k) for k in items], total, page.page, page.page_size
    )


@router.delete(
    "/{api_key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, ApiKeyNotFound),
)
async def revoke_api_key(api_key_id: ApiKeyId, service: ServiceDep) -> Response:
    """At once: the key's next request is 401. A key of another organization, or one already
    revoked, is 404."""
    await service.revoke(api_key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
