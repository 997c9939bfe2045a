"""The resolved tenant of a request: who is calling, in which organization, with which role."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import PermissionDenied
from app.core.permissions import Permission, has_permission
from app.models.enums import Role


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
