from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, StringConstraints

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


class RegisterRequest(InputSchema):
    email: Email
    password: Password
    name: Name
    organization_name: Name


class LoginRequest(InputSchema):
    email: LoginEmail
    password: Annotated[str, StringConstraints(min_length=1, max_length=128), Safe]


class RefreshRequest(InputSchema):
    refresh_token: JwtString


class TokenPair(OutputSchema):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int  # access-token lifetime in seconds


class UserRead(OutputSchema):
    id: int
    email: str
    name: str
    created_at: datetime


class RegisterResponse(TokenPair):
    user: UserRead
    organization: OrganizationRead


class MeResponse(UserRead):
    organizations: list[OrganizationSummary]
