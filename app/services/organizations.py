"""Organizations and their members: who may grant which role, and the owner's protection."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    AlreadyMember,
    InvalidToken,
    MemberNotFound,
    NotAMember,
    OwnerImmutable,
    PermissionDenied,
    UserNotFound,
)
from app.core.permissions import Permission
from app.core.tenancy import TenantContext
from app.models import Membership, Organization, Role, User
from app.repositories.organizations import OrganizationRepository
from app.repositories.users import UserRepository
from app.schemas.event import EventType
from app.schemas.organization import AssignableRole, MemberRead, OrganizationRead
from app.services import events
from app.services.pipelines import create_default as create_default_pipeline


def _member_read(membership: Membership, user: User) -> MemberRead:
    return MemberRead(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=membership.role,
        joined_at=membership.created_at,
    )


def _organization_read(organization: Organization, role: Role) -> OrganizationRead:
    return OrganizationRead(
        id=organization.id, name=organization.name, created_at=organization.created_at, role=role
    )


class OrganizationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.organizations = OrganizationRepository(session)
        self.users = UserRepository(session)

    async def list_mine(self, user_id: int) -> list[OrganizationRead]:
        await self._require_account(user_id)
        rows = await self.organizations.list_for_user(user_id)
        return [_organization_read(org, role) for org, role in rows]

    async def create(self, user_id: int, name: str) -> OrganizationRead:
        await self._require_account(user_id)
        organization, _ = await self.found(name, user_id)
        return _organization_read(organization, Role.OWNER)

    async def found(self, name: str, user_id: int) -> tuple[Organization, Membership]:
        """A new organization (whatever creates one: a registration, `POST /organizations`),
        with its default pipeline and its owner's membership, whose `member.added` is its first
        event."""
        organization = await self.organizations.add(Organization(name=name))
        await create_default_pipeline(self.session, organization.id)
        membership = await self._add_owner(organization, user_id)
        return organization, membership

    async def _add_owner(self, organization: Organization, user_id: int) -> Membership:
        membership = await self.organizations.add_member(organization.id, user_id, Role.OWNER)
        user = await self.users.get(user_id)  # in the session already: no round trip
        if user is None:
            raise InvalidToken()
        ctx = TenantContext(user_id, organization.id, Role.OWNER)
        events.record(self.session, ctx, EventType.MEMBER_ADDED, _member_read(membership, user))
        return membership

    async def get(self, ctx: TenantContext) -> OrganizationRead:
        organization = await self._organization(ctx)
        return _organization_read(organization, ctx.role)

    async def rename(self, ctx: TenantContext, name: str | None) -> OrganizationRead:
        ctx.require(Permission.MANAGE_ORGANIZATION)
        organization = await self._organization(ctx)
        if name is not None:
            organization.name = name
            await self.session.flush()
        return _organization_read(organization, ctx.role)

    async def list_members(self, ctx: TenantContext) -> list[MemberRead]:
        rows = await self.organizations.list_members(ctx.organization_id)
        return [_member_read(m, u) for m, u in rows]

    async def add_member(self, ctx: TenantContext, email: str, role: AssignableRole) -> MemberRead:
        ctx.require(Permission.MANAGE_MEMBERS)
        self._require_may_grant(ctx, Role(role))
        user = await self.users.get_by_email(email)
        if user is None:
            raise UserNotFound()
        if await self.organizations.get_membership(ctx.organization_id, user.id) is not None:
            raise AlreadyMember()
        try:
            membership = await self.organizations.add_member(
                ctx.organization_id, user.id, Role(role)
            )
        except IntegrityError as exc:
            raise AlreadyMember() from exc
        added = _member_read(membership, user)
        events.record(self.session, ctx, EventType.MEMBER_ADDED, added)
        return added

    async def change_role(
        self, ctx: TenantContext, user_id: int, role: AssignableRole
    ) -> MemberRead:
        ctx.require(Permission.MANAGE_MEMBERS)
        membership, user = await self._target_member(ctx, user_id)
        self._require_may_manage(ctx, membership)
        self._require_may_grant(ctx, Role(role))
        before = _member_read(membership, user)
        membership.role = Role(role)
        await self.session.flush()
        after = _member_read(membership, user)
        events.record_update(self.session, ctx, EventType.MEMBER_UPDATED, before, after)
        return after

    async def remove_member(self, ctx: TenantContext, user_id: int) -> None:
        """Owner/admin remove others; anyone may leave, except the owner, who cannot."""
        if user_id == ctx.user_id:
            ctx.require(Permission.LEAVE_ORGANIZATION)
            if ctx.role is Role.OWNER:
                raise OwnerImmutable()
            membership, user = await self._target_member(ctx, user_id)
        else:
            ctx.require(Permission.MANAGE_MEMBERS)
            membership, user = await self._target_member(ctx, user_id)
            self._require_may_manage(ctx, membership)
        removed = _member_read(membership, user)
        await self.organizations.remove_member(ctx.organization_id, user_id)
        events.record(self.session, ctx, EventType.MEMBER_REMOVED, removed)

    async def _require_account(self, user_id: int) -> None:
        # A token outlives a deleted account: that is a 401 (as on /auth/me), not an empty
        # list or a foreign-key failure (500) when the membership row is written.
        if await self.users.get(user_id) is None:
            raise InvalidToken()

    async def _organization(self, ctx: TenantContext) -> Organization:
        organization = await self.organizations.get(ctx.organization_id)
        if organization is None:  # deleted between the membership check and now
            raise NotAMember()
        return organization

    async def _target_member(self, ctx: TenantContext, user_id: int) -> tuple[Membership, User]:
        found = await self.organizations.get_member(ctx.organization_id, user_id)
        if found is None:
            raise MemberNotFound()
        return found

    @staticmethod
    def _require_may_manage(ctx: TenantContext, target: Membership) -> None:
        if target.role is Role.OWNER:
            raise OwnerImmutable()
        # Admins manage the people below them; only the owner manages admins.
        if target.role is Role.ADMIN and not ctx.can(Permission.GRANT_ADMIN):
            raise PermissionDenied("Only the owner may change or remove an admin.")

    @staticmethod
    def _require_may_grant(ctx: TenantContext, role: Role) -> None:
        if role is Role.ADMIN and not ctx.can(Permission.GRANT_ADMIN):
            raise PermissionDenied("Only the owner may grant the admin role.")
