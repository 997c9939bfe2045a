from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, EmailStr, Field, StringConstraints

from app.schemas.common import Id, InputSchema, Name, NotNullOnPatch, OutputSchema, Phone
from app.schemas.custom_field import CustomValues

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
    company_id: Id | None = Field(
        default=None, description="A company of this organization (else 400 `COMPANY_NOT_FOUND`)."
    )
    custom_fields: CustomValues = Field(default_factory=dict)


class ContactUpdate(NotNullOnPatch):
    model_config = ConfigDict(json_schema_extra={"examples": [{"phone": "+1 415 555 0199"}]})

    _not_null = ("name", "owner_id", "custom_fields")

    name: Name | None = None
    email: ContactEmail | None = None
    phone: Phone | None = None
    owner_id: Id | None = None
    company_id: Id | None = Field(
        default=None,
        description="A company of this organization (else 400 `COMPANY_NOT_FOUND`); null "
        "takes the contact out of its company.",
    )
    custom_fields: CustomValues | None = None


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
                    "company_id": 2,
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
    # Last, so that an export's columns before it keep their places.
    company_id: int | None
    custom_fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Custom field values by key (see `/custom-fields`); `{}` when none.",
    )
