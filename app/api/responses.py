"""OpenAPI descriptions of the problem+json errors routes can return."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import ApiKeyNotAllowed, AppError, InvalidToken, NotAMember, Unauthenticated
from app.core.handlers import HTTP_CODES, PROBLEM_JSON, problem_type

# Codes the handlers send besides those of `AppError` subclasses and `HTTP_CODES`.
_HANDLER_CODES = frozenset({"VALIDATION_ERROR", "INTERNAL_ERROR", "HTTP_ERROR"})


def problem_codes() -> list[str]:
    """Every `code` a problem body can carry: the error classes are the one source of truth,
    so a new error class is documented without another list to keep in step."""
    codes = set(_HANDLER_CODES) | set(HTTP_CODES.values())
    pending: list[type[AppError]] = [AppError]
    while pending:
        error = pending.pop()
        codes.add(error.code)
        pending.extend(error.__subclasses__())
    return sorted(codes)


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(
        description="Where: `body`, `query`, `path` or `header`, then "
        "the field's name (and list index) within it."
    )
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details: every error, whatever its status."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:mini-crm:problem:deal-not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "Deal not found.",
                    "code": "DEAL_NOT_FOUND",
                    "request_id": "4f0c9d5e8a7b4c1d9e2f3a4b5c6d7e8f",
                },
                {
                    "type": "urn:mini-crm:problem:validation-error",
                    "title": "Unprocessable Content",
                    "status": 422,
                    "detail": "The request does not match the expected schema.",
                    "code": "VALIDATION_ERROR",
                    "request_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
                    "errors": [
                        {"loc": ["body", "title"], "msg": "Field required", "type": "missing"}
                    ],
                },
            ]
        }
    )

    type: str = Field(description="A URN naming the kind of problem.")
    title: str
    status: int = Field(description="The HTTP status code.")
    detail: str
    # The enum is filled in from `problem_codes()` when the document is built.
    code: str = Field(description="A stable, machine-readable name of the error.")
    request_id: str | None = Field(
        description="The same value as the `X-Request-ID` header (but in an answer "
        "replayed under an `Idempotency-Key`: the first request's)."
    )
    errors: list[ValidationIssue] = Field(
        default_factory=list, description="Only on `VALIDATION_ERROR`: what is wrong, where."
    )


_REQUEST_ID_HEADER: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request id (echoed from the request's `X-Request-ID` when given); "
        "the same value as the body's `request_id`.",
        "required": True,
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer"},
    }
}
# Headers the contract requires on some error statuses.
_STATUS_HEADERS: dict[int | str, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Always `Bearer`.",
            "required": True,
            "schema": {"type": "string", "const": "Bearer"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
_DESCRIPTIONS: dict[int | str, str] = {
    400: "A business rule refused the request.",
    401: "Missing, invalid or expired credentials.",
    403: "Authenticated, but not allowed (or not a member of the organization).",
    404: "Not found, or belongs to another organization.",
    409: "Conflict with the current state.",
    410: "The cursor points before events that retention has deleted.",
    412: "`If-Match` does not match the resource's current `ETag`; nothing was changed.",
    413: "The request body is too large (`MAX_REQUEST_BODY_BYTES`; for imports "
    "`IMPORT_MAX_BYTES`).",
    415: "The request body is not JSON (its Content-Type is not application/json); for a "
    "file upload: not a multipart/form-data form, or a file of a format not taken.",
    422: "The request does not match the schema: `VALIDATION_ERROR`, with `errors`.",
    429: "Too many requests; see Retry-After.",
    503: "The database is unavailable or too busy (`DATABASE_UNAVAILABLE`, `DATABASE_BUSY`); "
    "retry after Retry-After seconds.",
    "default": "Any other error, as problem details (500 `INTERNAL_ERROR`, 405, 406 ...).",
}


def problem_response(status: int | str, errors: Sequence[type[AppError]] = ()) -> dict[str, Any]:
    """One documented problem+json response (only that media type: the server sends no other
    for an error). The `Problem` schema is added to the components with the document.

    `errors` are the error classes the operation raises itself with this status: each becomes
    a named example, and the description names their codes."""
    media_type: dict[str, Any] = {"schema": {"$ref": "#/components/schemas/Problem"}}
    description = _DESCRIPTIONS[status]
    if errors:
        codes = list(dict.fromkeys(error.code for error in errors))
        description += " Codes: " + ", ".join(f"`{code}`" for code in codes) + "."
        examples: dict[str, Any] = {}
        for error in errors:
            examples.setdefault(error.code, {"summary": error.detail, "value": _example(error)})
        media_type["examples"] = examples
    return {
        "description": description,
        "content": {PROBLEM_JSON: media_type},
        "headers": {**_REQUEST_ID_HEADER, **_STATUS_HEADERS.get(status, {})},
    }


def _example(error: type[AppError]) -> dict[str, Any]:
    return {
        "type": problem_type(error.code),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "request_id": "4f0c9d5e8a7b4c1d9e2f3a4b5c6d7e8f",
    }


def problems(*answers: int | type[AppError]) -> dict[int | str, dict[str, Any]]:
    """The problem responses of an operation: statuses, or the error classes it raises (their
    statuses, with their codes as examples)."""
    errors: dict[int, list[type[AppError]]] = {}
    for answer in answers:
        if isinstance(answer, int):
            errors.setdefault(answer, [])
        else:
            errors.setdefault(answer.status, []).append(answer)
    return {status: problem_response(status, errors[status]) for status in sorted(errors)}


# What every authenticated (and every tenant) operation may answer, to compose with the
# operation's own errors: `problems(*TENANT_ERRORS, DealNotFound)`.
AUTHENTICATED_ERRORS: tuple[int | type[AppError], ...] = (Unauthenticated, InvalidToken, 422)
TENANT_ERRORS: tuple[int | type[AppError], ...] = (*AUTHENTICATED_ERRORS, NotAMember)
AUTHENTICATED = problems(*AUTHENTICATED_ERRORS)
# A person's own account and organizations: an API key is refused there.
PEOPLE_ONLY = problems(*AUTHENTICATED_ERRORS, ApiKeyNotAllowed)
TENANT = problems(*TENANT_ERRORS)
