"""What each role may do: the single table the rest of the code asks."""

from __future__ import annotations

from enum import StrEnum

from app.models.enums import Role


class Permission(StrEnum):
    READ = "read"
    CREATE = "create"
    COMMENT = "comment"
    # Update or delete others' companies, contacts, deals and tasks (members: their own only).
    MODIFY_ANY_RECORD = "modify_any_record"
    REASSIGN_OWNER = "reassign_owner"
    ROLLBACK_STAGE = "rollback_stage"
    MANAGE_ORGANIZATION = "manage_organization"  # rename it, set up its pipelines
    MANAGE_MEMBERS = "manage_members"  # add, change, remove others
    LEAVE_ORGANIZATION = "leave_organization"  # remove oneself
    MANAGE_API_KEYS = "manage_api_keys"
    GRANT_ADMIN = "grant_admin"
    MANAGE_WEBHOOKS = "manage_webhooks"  # list, change, delete, ping, see deliveries
    WEBHOOK_SECRETS = "webhook_secrets"  # create an endpoint or rotate its secret (shown once)
    MANAGE_CUSTOM_FIELDS = "manage_custom_fields"  # define, change, delete custom fields


_MEMBER = frozenset(
    {Permission.READ, Permission.CREATE, Permission.COMMENT, Permission.LEAVE_ORGANIZATION}
)
_MANAGER = _MEMBER | {Permission.MODIFY_ANY_RECORD, Permission.REASSIGN_OWNER}
_ADMIN = _MANAGER | {
    Permission.ROLLBACK_STAGE,
    Permission.MANAGE_ORGANIZATION,
    Permission.MANAGE_MEMBERS,
    Permission.MANAGE_API_KEYS,
    Permission.MANAGE_WEBHOOKS,
    Permission.WEBHOOK_SECRETS,
    Permission.MANAGE_CUSTOM_FIELDS,
}
_OWNER = _ADMIN | {Permission.GRANT_ADMIN}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: _OWNER,
    Role.ADMIN: _ADMIN,
    Role.MANAGER: _MANAGER,
    Role.MEMBER: _MEMBER,
}


# Roles from least to most power: each has every permission of those before it.
_POWER = (Role.MEMBER, Role.MANAGER, Role.ADMIN, Role.OWNER)


def is_above(role: Role, other: Role) -> bool:
    return _POWER.index(role) > _POWER.index(other)


def capped(role: Role, ceiling: Role) -> Role:
    """`role`, or `ceiling` if that is lower (an API key acts at most as its creator may)."""
    return ceiling if is_above(role, ceiling) else role


# What no API key may do, whatever its role: who belongs to the organization and which
# credentials it has stay with people, so a leaked key cannot mint more power.
PEOPLE_ONLY: frozenset[Permission] = frozenset(
    {
        Permission.MANAGE_MEMBERS,
        Permission.LEAVE_ORGANIZATION,
        Permission.MANAGE_API_KEYS,
        Permission.GRANT_ADMIN,
        Permission.WEBHOOK_SECRETS,
    }
)


def has_permission(role: Role, permission: Permission, *, api_key: bool = False) -> bool:
    if api_key and permission in PEOPLE_ONLY:
        return False
    return permission in ROLE_PERMISSIONS[role]
