"""Who is calling, and as whom in which organization: the one way a request gets its tenant.

A request's credential proves a `Caller`; its organization and role are then read from the
database on every request, in one statement (`app.repositories.tenancy.tenant_query`), which
also checks that the credential still stands. `app.services.tenancy.resolve_tenant` runs it and
turns the answer into a `TenantContext` or an error:

- the credential no longer stands (login session revoked, account deleted): 401;
- the caller is not a member of that organization, or it does not exist: 403 `NOT_A_MEMBER`.

Requests that read something else on the same round trip (`GET /deals/{id}` the deal,
analytics the data version) add their columns to that statement rather than resolving the
tenant another way. A second kind of credential (an organization API key, which implies its
organization and carries a role) would be a second base statement with the same two leading
columns, chosen by the kind of `Caller`: every caller of `resolve_tenant` stays as it is."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import PermissionDenied
from app.core.permissions import Permission, has_permission
from app.models.enums import Role


@dataclass(frozen=True, slots=True)
class Caller:
    """A user, in one login session, as a verified access token says.

    The token's signature proves the pair; whether the session is still live (not revoked by a
    logout or a refresh-token reuse) is checked on every request with the tenant, or by
    `app.services.tenancy.authenticate` on requests without one."""

    user_id: int
    session_id: int


@dataclass(frozen=True, slots=True)
class TenantContext:
    user_id: int
    organization_id: int
    role: Role

    def can(self, permission: Permission) -> bool:
        return has_permission(self.role, permission)

    def require(self, permission: Permission, detail: str | None = None) -> None:
        if not self.can(permission):
            raise PermissionDenied(detail or f"Your role ({self.role}) may not do this.")
