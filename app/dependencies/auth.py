from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.errors import Unauthenticated
from app.core.request_context import organization_id_var, user_id_var
from app.core.security import TokenType
from app.core.tenancy import TenantContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.schemas.common import MAX_ID
from app.services.organizations import resolve_tenant

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An access token from `POST /auth/login` (or register / refresh).",
)


async def get_current_user_id(
    request: Request,
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> int:
    """The caller's user id from a valid *access* token; anything else is 401."""
    if credentials is None:
        raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
    claims = resources.tokens.decode(credentials.credentials, TokenType.ACCESS)
    request.state.user_id = claims.user_id
    user_id_var.set(claims.user_id)
    return claims.user_id


CurrentUserId = Annotated[int, Depends(get_current_user_id)]


async def get_tenant(
    request: Request,
    user_id: CurrentUserId,
    session: SessionDep,
    x_organization_id: Annotated[
        int,
        Header(
            ge=1,
            le=MAX_ID,
            description="The organization this request acts in; the caller must be a member.",
        ),
    ],
) -> TenantContext:
    return await _tenant(request, session, user_id, x_organization_id)


async def _tenant(
    request: Request, session: SessionDep, user_id: int, organization_id: int
) -> TenantContext:
    ctx = await resolve_tenant(session, user_id, organization_id)
    request.state.organization_id = organization_id
    organization_id_var.set(organization_id)
    return ctx


OrgContext = Annotated[TenantContext, Depends(get_tenant)]


async def get_path_tenant(
    request: Request,
    user_id: CurrentUserId,
    session: SessionDep,
    organization_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> TenantContext:
    return await _tenant(request, session, user_id, organization_id)


PathOrgContext = Annotated[TenantContext, Depends(get_path_tenant)]
