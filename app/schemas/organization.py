from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, EmailStr, StringConstraints

from app.models.enums import Role
from app.schemas.common import InputSchema, Name, NotNullOnPatch, OutputSchema


class AssignableRole(StrEnum):
    """Roles that can be granted through the members API (there is one owner, the creator)."""

    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"


class OrganizationCreate(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Europe"}]})

    name: Name


class OrganizationUpdate(NotNullOnPatch):
    """`name` may be left out (nothing changes) but not sent as `null`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Acme Europe GmbH"}]})

    _not_null = ("name",)

    name: Name | None = None


class OrganizationSummary(OutputSchema):
    id: int
    name: str
    role: Role


class OrganizationRead(OrganizationSummary):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"id": 1, "name": "Acme Ltd", "role": "owner", "created_at": "2026-01-15T10:00:00Z"}
            ]
        }
    )

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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 2,
                    "email": "bob@example.com",
                    "name": "Bob Jones",
                    "role": "manager",
                    "joined_at": "2026-01-15T10:00:00Z",
                }
            ]
        }
    )

    user_id: int
    email: str
    name: str
    role: Role
    joined_at: datetime
