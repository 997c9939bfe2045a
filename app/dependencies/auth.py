from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.core.errors import Unauthenticated
from app.core.request_context import organization_id_var, user_id_var
from app.core.security import TokenType
from app.core.tenancy import TenantContext
from app.dependencies.db import SessionDep, resources_of
from app.dependencies.organization_header import organization_id_header
from app.schemas.common import MAX_ID
from app.services.organizations import resolve_tenant


class AccessTokenBearer(HTTPBearer):
    """The caller's user id from a valid *access* token; anything else is 401.

    The bearer security scheme (OpenAPI, Swagger UI's Authorize button) that also verifies
    the token: one dependency on every authenticated request instead of a chain of three
    (scheme, resources, verification), each of which FastAPI solves per request."""

    async def __call__(self, request: Request) -> int:  # type: ignore[override]
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
        claims = resources_of(request).tokens.decode(token, TokenType.ACCESS)
        request.state.user_id = claims.user_id
        user_id_var.set(claims.user_id)
        return claims.user_id


CurrentUserId = Annotated[
    int,
    Depends(
        AccessTokenBearer(
            scheme_name="HTTPBearer",
            description="An access token from `POST /auth/login` (or register / refresh).",
        )
    ),
]


# A security scheme, so Swagger UI's Authorize holds it (see `organization_header`).
OrganizationIdHeader = Annotated[int, Security(organization_id_header)]


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
