from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.api.rate_limits import count_credential, count_organization
from app.core.errors import InvalidToken, Unauthenticated
from app.core.request_context import organization_id_var, user_id_var
from app.core.security import TokenType, api_key_organization, hash_api_key, is_api_key
from app.core.tenancy import AnyCaller, ApiKeyCaller, Caller, TenantContext
from app.dependencies.db import SessionDep, resources_of
from app.dependencies.organization_header import API_KEY_HEADER, organization_id_header
from app.schemas.common import MAX_ID
from app.services.tenancy import authenticate, resolve_tenant


class AccessTokenBearer(HTTPBearer):
    """The caller from a valid *access* token (its signature and claims), or from an API key
    (`Authorization: Bearer mcrm_…` or `X-API-Key: mcrm_…`); anything else is 401.

    The bearer security scheme (OpenAPI, Swagger UI's Authorize button) that also verifies
    the token: one dependency on every authenticated request instead of a chain of three
    (scheme, resources, verification), each of which FastAPI solves per request.

    An API key is only shaped here (its organization read, its hash taken): whether it stands
    is known once its row is read, with the tenant. So it is counted against its rate limit
    there (`bind_tenant`), under its own id, where a user is counted here."""

    async def __call__(self, request: Request) -> AnyCaller:  # type: ignore[override]
        authorization = request.headers.get("Authorization")
        api_key = request.headers.get(API_KEY_HEADER)
        if api_key is not None:
            if authorization is not None:
                raise Unauthenticated(f"Send one credential: Authorization or {API_KEY_HEADER}.")
            return _api_key_caller(api_key)
        scheme, token = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
        if is_api_key(token):
            return _api_key_caller(token)
        claims = resources_of(request).tokens.decode(token, TokenType.ACCESS)
        request.state.user_id = claims.user_id
        request.state.credential = f"user:{claims.user_id}"
        user_id_var.set(claims.user_id)
        caller = Caller(user_id=claims.user_id, session_id=claims.session_id)
        count_credential(request, request.state.credential)
        return caller


def _api_key_caller(key: str) -> ApiKeyCaller:
    organization_id = api_key_organization(key)
    if organization_id is None:
        raise InvalidToken()
    return ApiKeyCaller(key_hash=hash_api_key(key), organization_id=organization_id)


# The credential is verified as far as it can be without the database (a token's signature;
# an API key's shape), but not yet whether it still stands (login session revoked; key revoked
# or expired): only for the dependencies that check that in the statement resolving the tenant
# (`resolve_tenant`).
TokenCaller = Annotated[
    AnyCaller,
    Depends(
        AccessTokenBearer(
            scheme_name="HTTPBearer",
            bearerFormat="JWT",
            description="An access token from `POST /auth/login` (or register / refresh), or "
            "an organization's API key (`mcrm_…`, also accepted as `X-API-Key`), which implies "
            "its organization.",
        )
    ),
]


async def get_current_user_id(caller: TokenCaller, session: SessionDep) -> int:
    return await authenticate(session, caller)


# For routes without a tenant: the caller's user id, their login session checked (an API key
# is refused: 403, or 401 if it no longer stands).
CurrentUserId = Annotated[int, Depends(get_current_user_id)]


# A security scheme, so Swagger UI's Authorize holds it (see `organization_header`). None only
# for a request made with an API key, which names its organization itself.
OrganizationIdHeader = Annotated[int | None, Security(organization_id_header)]


def acting_organization(caller: AnyCaller, x_organization_id: int | None) -> int:
    """The organization a request acts in: the header's; for an API key without the header,
    the key's own. (A key sent with another organization's id is then 403 `NOT_A_MEMBER`.)"""
    if x_organization_id is not None:
        return x_organization_id
    if isinstance(caller, ApiKeyCaller):
        return caller.organization_id
    raise InvalidToken()  # unreachable: the header dependency answered 422


async def get_tenant(
    request: Request,
    caller: TokenCaller,
    session: SessionDep,
    x_organization_id: OrganizationIdHeader,
) -> TenantContext:
    ctx, _ = await resolve_tenant(session, caller, acting_organization(caller, x_organization_id))
    return bind_tenant(request, ctx)


def bind_tenant(request: Request, ctx: TenantContext) -> TenantContext:
    """Record the resolved organization for the access log and log records, and count the
    request against it (429 when it is over its rate limit). A request made with an API key
    is counted against the key here, once the key is known to stand, and its use recorded."""
    request.state.organization_id = ctx.organization_id
    organization_id_var.set(ctx.organization_id)
    if ctx.api_key_id is not None:
        request.state.credential = ctx.credential
        request.state.user_id = ctx.user_id
        user_id_var.set(ctx.user_id)
        resources_of(request).api_key_usage.note(ctx)
        count_credential(request, ctx.credential)
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
