"""Who is calling, and as whom in which organization: the one way a request gets its tenant.

A request's credential proves a caller — a `Caller` (a user in a login session) or an
`ApiKeyCaller` (an organization's API key); its organization and role are then read from the
database on every request, in one statement (`app.repositories.tenancy.tenant_query`, one
base statement per kind of caller), which also checks that the credential still stands.
`app.services.tenancy.resolve_tenant` runs it and turns the answer into a `TenantContext` or
an error:

- the credential no longer stands (login session revoked, account deleted; API key revoked,
  expired, unknown, or its creator no longer a member): 401;
- the caller is not a member of that organization, or it does not exist (for an API key: any
  organization but its own): 403 `NOT_A_MEMBER`.

Requests that read something else on the same round trip (`GET /deals/{id}` the deal,
analytics the data version) add their columns to that statement rather than resolving the
tenant another way; every kind of caller gets them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from typing_extensions import TypedDict

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
class ApiKeyCaller:
    """Whoever presents an API key: nothing is proven until its hash is found (with the
    tenant, in one statement). `organization_id` is the organization the key names
    (`app.core.security.api_key_organization`), where it acts unless told otherwise."""

    key_hash: str
    organization_id: int


# Every kind of caller; `app.repositories.tenancy` has one base statement for each.
AnyCaller = Caller | ApiKeyCaller


class Actor(TypedDict):
    """Who did something, as timeline entries and events name them."""

    type: Literal["user", "api_key"]
    id: int


@dataclass(frozen=True, slots=True)
class TenantContext:
    """A resolved request: acting as `user_id` with `role` in `organization_id`.

    For an API key, `user_id` is the key's creator (records it creates are theirs), `role` the
    key's (never above its creator's current role), `api_key_id` the key. `api_key_used_at` is
    when the key's use was last recorded (`app.services.api_keys.KeyUsage`)."""

    user_id: int
    organization_id: int
    role: Role
    api_key_id: int | None = None
    api_key_used_at: datetime | None = None

    @property
    def actor(self) -> Actor:
        """Who acts: `{"type": "api_key", "id": <key id>}` for a request made with an API key,
        else `{"type": "user", "id": <user id>}`."""
        if self.api_key_id is not None:
            return {"type": "api_key", "id": self.api_key_id}
        return {"type": "user", "id": self.user_id}

    @property
    def credential(self) -> str:
        """What rate limits and idempotency keys are counted and scoped under:
        `user:<id>` or `api_key:<id>` (a key is its own credential, not its creator's)."""
        actor = self.actor
        return f"{actor['type']}:{actor['id']}"

    def can(self, permission: Permission) -> bool:
        return has_permission(self.role, permission, api_key=self.api_key_id is not None)

    def require(self, permission: Permission, detail: str | None = None) -> None:
        if not self.can(permission):
            if self.api_key_id is not None and has_permission(self.role, permission):
                raise PermissionDenied(detail or "API keys may not do this; a person must.")
            raise PermissionDenied(detail or f"Your role ({self.role}) may not do this.")
