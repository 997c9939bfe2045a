from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.api.responses import PEOPLE_ONLY, TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    AlreadyMember,
    MemberNotFound,
    OwnerImmutable,
    PermissionDenied,
    UserNotFound,
)
from app.dependencies.auth import CurrentUserId, PathOrgContext
from app.dependencies.db import SessionDep
from app.schemas.common import MAX_ID
from app.schemas.organization import (
    MemberAdd,
    MemberRead,
    MemberUpdate,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
)
from app.services.organizations import OrganizationService

router = APIRouter(prefix="/organizations", tags=["organizations"], route_class=StrictJSONRoute)

MemberId = Annotated[int, Path(ge=1, le=MAX_ID, description="The member's user id.")]
_MEMBER_ERRORS = problems(*TENANT_ERRORS)


async def get_organization_service(session: SessionDep) -> OrganizationService:
    return OrganizationService(session)


ServiceDep = Annotated[OrganizationService, Depends(get_organization_service)]


@router.get("/me", summary="Organizations I belong to", responses=PEOPLE_ONLY)
async def list_my_organizations(
    user_id: CurrentUserId, service: ServiceDep
) -> list[OrganizationRead]:
    return await service.list_mine(user_id)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an organization (you become its owner)",
    responses=PEOPLE_ONLY,
)
async def create_organization(
    body: OrganizationCreate, user_id: CurrentUserId, service: ServiceDep
) -> OrganizationRead:
    return await service.create(user_id, body.name)


@router.get("/{organization_id}", summary="Read an organization", responses=_MEMBER_ERRORS)
async def read_organization(ctx: PathOrgContext, service: ServiceDep) -> OrganizationRead:
    """Any member. A non-member (or a missing organization) gets 403 `NOT_A_MEMBER`."""
    return await service.get(ctx)


@router.patch(
    "/{organization_id}",
    summary="Rename an organization (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied),
)
async def update_organization(
    body: OrganizationUpdate, ctx: PathOrgContext, service: ServiceDep
) -> OrganizationRead:
    return await service.rename(ctx, body.name)


@router.get("/{organization_id}/members", summary="List the members", responses=_MEMBER_ERRORS)
async def list_members(ctx: PathOrgContext, service: ServiceDep) -> list[MemberRead]:
    return await service.list_members(ctx)


@router.post(
    "/{organization_id}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add an existing user as a member (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, UserNotFound, AlreadyMember),
)
async def add_member(body: MemberAdd, ctx: PathOrgContext, service: ServiceDep) -> MemberRead:
    """`role` is `admin`, `manager` or `member`; only the owner may grant `admin`.
    The user must already have an account (404 `USER_NOT_FOUND`); 409 if already a member."""
    return await service.add_member(ctx, body.email, body.role)


@router.patch(
    "/{organization_id}/members/{user_id}",
    summary="Change a member's role (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, MemberNotFound, OwnerImmutable),
)
async def update_member(
    user_id: MemberId, body: MemberUpdate, ctx: PathOrgContext, service: ServiceDep
) -> MemberRead:
    """The owner's role never changes here (409). Admins manage managers and members;
    only the owner manages admins."""
    return await service.change_role(ctx, user_id, body.role)


@router.delete(
    "/{organization_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member, or leave (any member, for themself)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, MemberNotFound, OwnerImmutable),
)
async def remove_member(user_id: MemberId, ctx: PathOrgContext, service: ServiceDep) -> Response:
    """The owner cannot be removed and cannot leave (409). Removal takes effect at once."""
    await service.remove_member(ctx, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
