"""OpenAPI descriptions of the problem+json errors routes can return."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.core.handlers import PROBLEM_JSON


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    errors: list[ValidationIssue] | None = None


_REQUEST_ID_HEADER: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request id (echoed from the request's `X-Request-ID` when given); "
        "the same value as the body's `request_id`.",
        "required": True,
        "schema": {"type": "string"},
    }
}
# Headers the contract requires on some error statuses.
_STATUS_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Always `Bearer`.",
            "required": True,
            "schema": {"type": "string", "const": "Bearer"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer"},
        }
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "A business rule refused the request.",
        401: "Missing, invalid or expired credentials.",
        403: "Authenticated, but not allowed (or not a member of the organization).",
        404: "Not found, or belongs to another organization.",
        409: "Conflict with the current state.",
        410: "The cursor points before events that retention has deleted.",
        412: "`If-Match` does not match the resource's current `ETag`; nothing was changed.",
        413: "The request body is too large.",
        415: "The request body is not JSON (its Content-Type is not application/json).",
        422: "The request does not match the schema.",
        429: "Too many requests; see Retry-After.",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "headers": {**_REQUEST_ID_HEADER, **_STATUS_HEADERS.get(status, {})},
        }
        for status in statuses
    }


AUTHENTICATED = problems(401, 422)
TENANT = problems(401, 403, 422)
