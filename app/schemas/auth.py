from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, EmailStr, StringConstraints
from pydantic.config import JsonDict

from app.schemas.common import InputSchema, Name, OutputSchema, Safe
from app.schemas.organization import OrganizationRead, OrganizationSummary

Password = Annotated[str, StringConstraints(min_length=8, max_length=128), Safe]
# Emails are case-insensitive accounts: normalise once, at the edge.
Email = Annotated[EmailStr, StringConstraints(max_length=320), AfterValidator(str.lower)]
LoginEmail = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=320, to_lower=True),
    Safe,
]
JwtString = Annotated[str, StringConstraints(min_length=1, max_length=4096), Safe]
# The shape of a refresh token, for the documentation (it is not a valid one).
EXAMPLE_REFRESH_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsInR5cCI6InJlZnJlc2giLCJleHAiOj"  # noqa: S105
    "E3OTk5OTk5OTl9.1Q2mXw0Hq3m9Zk6k3VbQeJ8aV0t3yP4rJ2nKcM5sLxE"
)
EXAMPLE_ACCESS_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsInR5cCI6ImFjY2VzcyIsImV4cCI6MTc5OTk5OTk5OX0"  # noqa: S105
    ".Xq3m9Zk6k3VbQeJ8aV0t3yP4rJ2nKcM5sLxE1Q2mXw0H"
)


class RegisterRequest(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ann@example.com",
                    "password": "StrongPassword123",
                    "name": "Ann Smith",
                    "organization_name": "Acme Ltd",
                }
            ]
        }
    )

    email: Email
    password: Password
    name: Name
    organization_name: Name


class LoginRequest(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ann@example.com", "password": "StrongPassword123"}]
        }
    )

    email: LoginEmail
    password: Annotated[str, StringConstraints(min_length=1, max_length=128), Safe]


class RefreshRequest(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": EXAMPLE_REFRESH_TOKEN}]}
    )

    refresh_token: JwtString


_USER_EXAMPLE: JsonDict = {
    "id": 1,
    "email": "ann@example.com",
    "name": "Ann Smith",
    "created_at": "2026-01-15T10:00:00Z",
}
_TOKENS_EXAMPLE: JsonDict = {
    "access_token": EXAMPLE_ACCESS_TOKEN,
    "refresh_token": EXAMPLE_REFRESH_TOKEN,
    "token_type": "bearer",
    "expires_in": 900,
}


class TokenPair(OutputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [_TOKENS_EXAMPLE]})

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int  # access-token lifetime in seconds


class UserRead(OutputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [_USER_EXAMPLE]})

    id: int
    email: str
    name: str
    created_at: datetime


class RegisterResponse(TokenPair):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_TOKENS_EXAMPLE,
                    "user": _USER_EXAMPLE,
                    "organization": {
                        "id": 1,
                        "name": "Acme Ltd",
                        "role": "owner",
                        "created_at": "2026-01-15T10:00:00Z",
                    },
                }
            ]
        }
    )

    user: UserRead
    organization: OrganizationRead


class MeResponse(UserRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_USER_EXAMPLE,
                    "organizations": [{"id": 1, "name": "Acme Ltd", "role": "owner"}],
                }
            ]
        }
    )

    organizations: list[OrganizationSummary]
