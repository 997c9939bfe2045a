from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, EmailStr, StringConstraints

from app.schemas.common import Id, InputSchema, Name, NotNullOnPatch, OutputSchema, Phone

ContactEmail = Annotated[EmailStr, StringConstraints(max_length=320)]


class ContactOrderBy(StrEnum):
    CREATED_AT = "created_at"
    NAME = "name"


class ContactCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Jane Cooper",
                    "email": "jane.cooper@example.com",
                    "phone": "+1 415 555 0134",
                }
            ]
        }
    )

    name: Name
    email: ContactEmail | None = None
    phone: Phone | None = None


class ContactUpdate(NotNullOnPatch):
    model_config = ConfigDict(json_schema_extra={"examples": [{"phone": "+1 415 555 0199"}]})

    _not_null = ("name", "owner_id")

    name: Name | None = None
    email: ContactEmail | None = None
    phone: Phone | None = None
    owner_id: Id | None = None


class ContactRead(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "organization_id": 1,
                    "owner_id": 1,
                    "name": "Jane Cooper",
                    "email": "jane.cooper@example.com",
                    "phone": "+1 415 555 0134",
                    "created_at": "2026-01-15T10:00:00Z",
                    "updated_at": "2026-01-15T10:00:00Z",
                }
            ]
        }
    )

    id: int
    organization_id: int
    owner_id: int
    name: str
    email: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime
