from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, EmailStr, StringConstraints

from app.models.enums import Role
from app.schemas.common import InputSchema, Name, OutputSchema


class AssignableRole(StrEnum):
    """Roles that can be granted through the members API (there is one owner, the creator)."""

    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"


class OrganizationCreate(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Europe"}]})

    name: Name


class OrganizationUpdate(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Europe GmbH"}]})

    name: Name | None = None


class OrganizationSummary(OutputSchema):
    id: int
    name: str
    role: Role


class OrganizationRead(OrganizationSummary):
    created_at: datetime


class MemberAdd(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "bob@example.com", "role": "manager"}]}
    )

    email: Annotated[EmailStr, StringConstraints(max_length=320)]
    role: AssignableRole


class MemberUpdate(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "admin"}]})

    role: AssignableRole


class MemberRead(OutputSchema):
    user_id: int
    email: str
    name: str
    role: Role
    joined_at: datetime
