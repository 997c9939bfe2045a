"""What each role may do: the single table the rest of the code asks."""

from __future__ import annotations

from enum import StrEnum

from app.models.enums import Role


class Permission(StrEnum):
    READ = "read"
    CREATE = "create"
    COMMENT = "comment"
    MODIFY_ANY_RECORD = "modify_any_record"  # update/delete others' contacts, deals, tasks
    REASSIGN_OWNER = "reassign_owner"
    ROLLBACK_STAGE = "rollback_stage"
    MANAGE_ORGANIZATION = "manage_organization"  # rename, add/change/remove members
    GRANT_ADMIN = "grant_admin"


_MEMBER = frozenset({Permission.READ, Permission.CREATE, Permission.COMMENT})
_MANAGER = _MEMBER | {Permission.MODIFY_ANY_RECORD, Permission.REASSIGN_OWNER}
_ADMIN = _MANAGER | {Permission.ROLLBACK_STAGE, Permission.MANAGE_ORGANIZATION}
_OWNER = _ADMIN | {Permission.GRANT_ADMIN}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: _OWNER,
    Role.ADMIN: _ADMIN,
    Role.MANAGER: _MANAGER,
    Role.MEMBER: _MEMBER,
}


def has_permission(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
