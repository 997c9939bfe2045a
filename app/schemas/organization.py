from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import EmailStr, StringConstraints

from app.models.enums import Role
from app.schemas.common import InputSchema, Name, OutputSchema


class AssignableRole(StrEnum):
    """Roles that can be granted through the members API (there is one owner, the creator)."""

    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"


class OrganizationCreate(InputSchema):
    name: Name


class OrganizationUpdate(InputSchema):
    name: Name | None = None


class OrganizationSummary(OutputSchema):
    id: int
    name: str
    role: Role


class OrganizationRead(OrganizationSummary):
    created_at: datetime


class MemberAdd(InputSchema):
    email: Annotated[EmailStr, StringConstraints(max_length=320)]
    role: AssignableRole


class MemberUpdate(InputSchema):
    role: AssignableRole


class MemberRead(OutputSchema):
    user_id: int
    email: str
    name: str
    role: Role
    joined_at: datetime
