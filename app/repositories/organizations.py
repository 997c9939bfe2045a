from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Membership, Organization, Role, User

memberships = Membership.__table__
# Another user's role (is the new owner of a record a member?). The caller's own tenant is
# resolved by `app.repositories.tenancy.tenant_query`, which also checks their session.
_ROLE_OF_MEMBER = select(memberships.c.role).where(
    memberships.c.organization_id == bindparam("organization_id"),
    memberships.c.user_id == bindparam("user_id"),
)


class OrganizationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, organization: Organization) -> Organization:
        self.session.add(organization)
        await self.session.flush()
        return organization

    async def get(self, organization_id: int) -> Organization | None:
        return await self.session.get(Organization, organization_id)

    async def get_role(self, organization_id: int, user_id: int) -> Role | None:
        role: Role | None = await self.session.scalar(
            _ROLE_OF_MEMBER, {"organization_id": organization_id, "user_id": user_id}
        )
        return role

    async def list_for_user(self, user_id: int) -> Sequence[tuple[Organization, Role]]:
        rows = await self.session.execute(
            select(Organization, Membership.role)
            .join(Membership, Membership.organization_id == Organization.id)
            .where(Membership.user_id == user_id)
            .order_by(Organization.id)
        )
        return [(org, role) for org, role in rows]

    async def add_member(self, organization_id: int, user_id: int, role: Role) -> Membership:
        membership = Membership(organization_id=organization_id, user_id=user_id, role=role)
        self.session.add(membership)
        await self.session.flush()
        return membership

    async def get_membership(self, organization_id: int, user_id: int) -> Membership | None:
        return await self.session.get(Membership, (organization_id, user_id))

    async def get_member(
        self, organization_id: int, user_id: int
    ) -> tuple[Membership, User] | None:
        row = await self.session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == organization_id, Membership.user_id == user_id)
        )
        result = row.one_or_none()
        return None if result is None else (result[0], result[1])

    async def list_members(self, organization_id: int) -> Sequence[tuple[Membership, User]]:
        rows = await self.session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == organization_id)
            .order_by(Membership.created_at, Membership.user_id)
        )
        return [(m, u) for m, u in rows]

    async def remove_member(self, organization_id: int, user_id: int) -> None:
        await self.session.execute(
            delete(Membership).where(
                Membership.organization_id == organization_id, Membership.user_id == user_id
            )
        )
