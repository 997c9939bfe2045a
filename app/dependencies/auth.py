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


# The parameter using it is named `x_organization_id`: the header is `X-Organization-Id`.
OrganizationIdHeader = Annotated[
    int,
    Header(
        ge=1,
        le=MAX_ID,
        description="The organization this request acts in; the caller must be a member.",
    ),
]


async def get_tenant(
    request: Request,
    user_id: CurrentUserId,
    session: SessionDep,
    x_organization_id: OrganizationIdHeader,
) -> TenantContext:
    return bind_tenant(request, await resolve_tenant(session, user_id, x_organization_id))


def bind_tenant(request: Request, ctx: TenantContext) -> TenantContext:
    """Record the resolved organization for the access log and log records."""
    request.state.organization_id = ctx.organization_id
    organization_id_var.set(ctx.organization_id)
    return ctx


OrgContext = Annotated[TenantContext, Depends(get_tenant)]


async def get_path_tenant(
    request: Request,
    user_id: CurrentUserId,
    session: SessionDep,
    organization_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> TenantContext:
    return bind_tenant(request, await resolve_tenant(session, user_id, organization_id))


PathOrgContext = Annotated[TenantContext, Depends(get_path_tenant)]
