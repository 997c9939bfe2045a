"""`X-Organization-Id`, read as a security scheme so Swagger UI's Authorize dialog holds it.

As a plain header parameter, Swagger UI asked for the organization id again on every operation
("Try it out" on each tenant endpoint). As an API-key security scheme it is typed once, next to
the access token, and remembered (`persistAuthorization`). The header stays required and is
validated exactly as a `Header(ge=1, le=MAX_ID)` parameter was: missing, not an integer or out
of range is the same 422 with `loc: ["header", "x-organization-id"]`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import Field, TypeAdapter, ValidationError

from app.schemas.common import MAX_ID

HEADER = "X-Organization-Id"
_LOC = ("header", HEADER.lower())
_ORGANIZATION_ID: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_ID)])


class OrganizationIdHeader(APIKeyHeader):
    def __init__(self) -> None:
        super().__init__(
            name=HEADER,
            scheme_name="OrganizationId",
            description="The organization a tenant request acts in (an `id` from "
            "`GET /organizations/me`); the caller must be a member. Required by every "
            "tenant endpoint.",
            auto_error=False,
        )

    async def __call__(self, request: Request) -> int:  # type: ignore[override]
        raw = request.headers.get(HEADER)
        if raw is None:
            raise RequestValidationError(
                [{"type": "missing", "loc": _LOC, "msg": "Field required", "input": None}]
            )
        try:
            return _ORGANIZATION_ID.validate_python(raw)
        except ValidationError as exc:
            errors: list[dict[str, Any]] = [
                {**error, "loc": _LOC} for error in exc.errors(include_url=False)
            ]
            raise RequestValidationError(errors) from None


organization_id_header = OrganizationIdHeader()
