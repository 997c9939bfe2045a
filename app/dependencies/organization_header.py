"""`X-Organization-Id`, read as a security scheme so Swagger UI's Authorize dialog holds it.

As a plain header parameter, Swagger UI asked for the organization id again on every operation
("Try it out" on each tenant endpoint). As an API-key security scheme it is typed once, next to
the access token, and remembered (`persistAuthorization`). The header stays required and is
validated exactly as a `Header(ge=1, le=MAX_ID)` parameter was: missing, not an integer or out
of range is the same 422 with `loc: ["header", "x-organization-id"]`.

A request made with an API key may leave it out (the key names its organization): then the
dependency gives None."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import Field, TypeAdapter, ValidationError

from app.core.security import is_api_key
from app.schemas.common import MAX_ID

HEADER = "X-Organization-Id"
API_KEY_HEADER = "X-API-Key"
_LOC = ("header", HEADER.lower())
_ORGANIZATION_ID: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_ID)])


class OrganizationIdHeader(APIKeyHeader):
    def __init__(self) -> None:
        super().__init__(
            name=HEADER,
            scheme_name="OrganizationId",
            description="The organization a tenant request acts in (an `id` from "
            "`GET /organizations/me`); the caller must be a member. Required by every "
            "tenant endpoint, except with an API key (which implies its organization).",
            auto_error=False,
        )

    async def __call__(self, request: Request) -> int | None:  # type: ignore[override]
        raw = request.headers.get(HEADER)
        if raw is None:
            if _presents_api_key(request):
                return None
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


def _presents_api_key(request: Request) -> bool:
    if request.headers.get(API_KEY_HEADER) is not None:
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and is_api_key(token.strip())
