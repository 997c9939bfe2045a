from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.api.rate_limits import count_credential, count_organization
from app.core.errors import Unauthenticated
from app.core.request_context import organization_id_var, user_id_var
from app.core.security import TokenType
from app.core.tenancy import Caller, TenantContext
from app.dependencies.db import SessionDep, resources_of
from app.dependencies.organization_header import organization_id_header
from app.schemas.common import MAX_ID
from app.services.tenancy import authenticate, resolve_tenant


class AccessTokenBearer(HTTPBearer):
    """The caller from a valid *access* token (its signature and claims); anything else is 401.

    The bearer security scheme (OpenAPI, Swagger UI's Authorize button) that also verifies
    the token: one dependency on every authenticated request instead of a chain of three
    (scheme, resources, verification), each of which FastAPI solves per request."""

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
        claims = resources_of(request).tokens.decode(token, TokenType.ACCESS)
        request.state.user_id = claims.user_id
        user_id_var.set(claims.user_id)
        caller = Caller(user_id=claims.user_id, session_id=claims.session_id)
        count_credential(request, caller)
        return caller


# The token is verified, but not yet whether its login session was revoked: only for the
# dependencies that check that in the statement resolving the tenant (`resolve_tenant`).
TokenCaller = Annotated[
    Caller,
    Depends(
        AccessTokenBearer(
            scheme_name="HTTPBearer",
            bearerFormat="JWT",
            description="An access token from `POST /auth/login` (or register / refresh).",
        )
    ),
]


async def get_current_user_id(caller: TokenCaller, session: SessionDep) -> int:
    await authenticate(session, caller)
    return caller.user_id


# For routes without a tenant: the caller's user id, their login session checked.
CurrentUserId = Annotated[int, Depends(get_current_user_id)]


# A security scheme, so Swagger UI's Authorize holds it (see `organization_header`).
OrganizationIdHeader = Annotated[int, Security(organization_id_header)]


async def get_tenant(
    request: Request,
    caller: TokenCaller,
    session: SessionDep,
    x_organization_id: OrganizationIdHeader,
) -> TenantContext:
    ctx, _ = await resolve_tenant(session, caller, x_organization_id)
    return bind_tenant(request, ctx)


def bind_tenant(request: Request, ctx: TenantContext) -> TenantContext:
    """Record the resolved organization for the access log and log records, and count the
    request against it (429 when it is over its rate limit)."""
    request.state.organization_id = ctx.organization_id
    organization_id_var.set(ctx.organization_id)
    count_organization(request, ctx.organization_id)
    return ctx


OrgContext = Annotated[TenantContext, Depends(get_tenant)]


async def get_path_tenant(
    request: Request,
    caller: TokenCaller,
    session: SessionDep,
    organization_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> TenantContext:
    ctx, _ = await resolve_tenant(session, caller, organization_id)
    return bind_tenant(request, ctx)


PathOrgContext = Annotated[TenantContext, Depends(get_path_tenant)]
