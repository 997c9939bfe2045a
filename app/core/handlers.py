"""Every error leaves the service as RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.errors import AppError, DatabaseBusy, DatabaseUnavailable, WriteConflict
from app.core.request_context import request_id_var
from app.db.session import is_lost_connection, is_write_conflict

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# The `code` of an error raised by the routing layer itself (404 no route, 405, ...), by status.
HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
}


def problem_type(code: str) -> str:
    return f"urn:mini-crm:problem:{code.lower().replace('_', '-')}"


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    request_id = request_id_var.get()
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if errors is not None:
        body["errors"] = errors
    # X-Request-ID itself is added to every response by RequestContextMiddleware.
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _clean_loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", ""))
    reason = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and isinstance(reason, str):
        return f"{message}: {reason}"  # e.g. "duplicate key 'name'"
    return message


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(
        exc.status, exc.code, exc.detail, title=exc.title, headers=exc.headers, errors=exc.errors
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only loc/msg/type: the rejected input and error context may be huge or not serialisable.
    errors = [
        {"loc": _clean_loc(e.get("loc", ())), "msg": _message(e), "type": e.get("type")}
        for e in exc.errors()
    ]
    return problem_response(
        422,
        "VALIDATION_ERROR",
        "The request does not match the expected schema.",
        errors=errors,
    )


# The methods a route here may answer, in the order a 405's `Allow` header names them.
ROUTABLE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method that some route answers on this path, for a 405's `Allow` header.

    Starlette names only the methods of the first route whose path matched: `PUT /deals/1`
    said `Allow: GET`, though PATCH and DELETE work there too."""
    scope = request.scope
    allowed = []
    for method in ROUTABLE_METHODS:
        probe = {
            "type": scope["type"],
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "method": method,
            "headers": [],
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    if exc.status_code == 404:
        detail = "No such endpoint."
    elif isinstance(exc.detail, str) and exc.detail:
        detail = exc.detail
    else:
        detail = HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem_response(exc.status_code, code, detail, headers=headers)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "INTERNAL_ERROR", "An unexpected error occurred.")


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("no database connection freed up on %s %s", request.method, request.url.path)
    return await _app_error(request, DatabaseBusy())


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A lost or refused database connection is the database's fault, not this service's:
    503 with Retry-After, never 500; so is a transaction the database rolled back to break a
    deadlock between concurrent writes. Any other database error is a bug: 500."""
    if is_write_conflict(exc):
        logger.warning(
            "write conflict on %s %s, rolled back: %s", request.method, request.url.path, exc
        )
        return await _app_error(request, WriteConflict())
    if not is_lost_connection(exc):
        return await _unhandled_error(request, exc)
    logger.warning(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
    )
    return await _app_error(request, DatabaseUnavailable())


def register_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    # The pool has no overflow: a request waits for a connection, and past the pool timeout
    # the answer is 503 with Retry-After rather than a 500.
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _pool_timeout)
    # Errors from the driver arrive as SQLAlchemy's (a statement on a dropped connection) or
    # as the socket's own OSError (a refused connect).
    app.add_exception_handler(sqlalchemy.exc.SQLAlchemyError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled_error)
