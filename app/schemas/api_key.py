from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, ConfigDict

from app.models.enums import Role
from app.schemas.common import InputSchema, Name, OutputSchema
from app.schemas.organization import AssignableRole


def _in_the_future(moment: datetime) -> datetime:
    if moment <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return moment


ExpiresAt = Annotated[AwareDatetime, AfterValidator(_in_the_future)]


class ApiKeyCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "Billing sync", "role": "member", "expires_at": "2027-06-30T00:00:00Z"}
            ]
        }
    )

    name: Name
    role: AssignableRole
    expires_at: ExpiresAt | None = None


class ApiKeyRead(OutputSchema):
    id: int
    name: str
    role: Role
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """The new key, with its secret `key`: shown this once, never again."""

    key: str
