from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.api.idempotency import not_idempotent
from app.api.responses import PEOPLE_ONLY, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    LoginThrottled,
    RefreshTokenReused,
)
from app.dependencies.auth import CurrentUserId
from app.dependencies.db import ResourcesDep, SessionDep
from app.schemas.auth import (
    LoginRequest,
    MeResponse,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    TokenPair,
    UserRead,
)
from app.schemas.organization import OrganizationRead
from app.services.auth import AuthService

router = APIRouter(prefix="/auth", tags=["auth"], route_class=StrictJSONRoute)


async def get_auth_service(session: SessionDep, resources: ResourcesDep) -> AuthService:
    return AuthService(session, resources.tokens, resources.passwords, resources.login_throttle)


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account and its first organization",
    responses=problems(EmailTaken, 422),
)
@not_idempotent
async def register(body: RegisterRequest, service: AuthServiceDep) -> RegisterResponse:
    """Creates the user, a new organization and the caller's `owner` membership in one
    transaction, and returns a token pair so the client is logged in at once.
    Emails are case-insensitive: `Ann@X.com` and `ann@x.com` are the same account (409)."""
    result = await service.register(body)
    return RegisterResponse(
        user=UserRead.model_validate(result.user),
        organization=OrganizationRead(
            id=result.organization.id,
            name=result.organization.name,
            created_at=result.organization.created_at,
            role=result.membership.role,
        ),
        **result.tokens.model_dump(),
    )


@router.post(
    "/login",
    summary="Log in with email and password",
    responses=problems(InvalidCredentials, 422, LoginThrottled),
)
@not_idempotent
async def login(body: LoginRequest, service: AuthServiceDep) -> TokenPair:
    """Returns an access token (send it as `Authorization: Bearer ...`) and a refresh token.
    Unknown email and wrong password give the same 401. Repeated failures for one email are
    throttled (429 with `Retry-After`)."""
    return await service.login(body.email, body.password)


@router.post(
    "/refresh",
    summary="Exchange a refresh token for a new pair",
    responses=problems(InvalidToken, RefreshTokenReused, 422),
)
@not_idempotent
async def refresh(body: RefreshRequest, service: AuthServiceDep) -> TokenPair:
    """Each refresh token works once. Presenting a used one revokes the whole login session."""
    return await service.refresh(body.refresh_token)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the login session of a refresh token",
    responses=problems(InvalidToken, RefreshTokenReused, 422),
)
@not_idempotent
async def logout(body: RefreshRequest, service: AuthServiceDep) -> Response:
    await service.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", summary="The current user and their organizations", responses=PEOPLE_ONLY)
async def read_me(user_id: CurrentUserId, service: AuthServiceDep) -> MeResponse:
    return await service.me(user_id)
