"""Pure-ASGI middleware: request id, body-size limit, access log, last-resort 500."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.handlers import problem_response
from app.core.metrics import observe_request
from app.core.request_context import request_id_var

logger = logging.getLogger("app.access")
_error_logger = logging.getLogger("app.errors")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


ResponseHeaders = Callable[[Scope], list[tuple[bytes, bytes]]]


class RequestContextMiddleware:
    """Gives every request an id (echoed from `X-Request-ID` when it is sane), caps the body
    size, writes one access-log line, and turns any exception that escaped the app into a
    problem+json 500 that still carries the request id.

    `response_headers` adds fields that depend on what the request did (the rate limits it
    counted against, `app.api.rate_limits`) to every response, errors included: read from the
    scope as the response starts, in the header copy made here anyway."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
        response_headers: ResponseHeaders | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths that take larger bodies than the rest (file uploads), and their limits.
        self.body_limits = dict(body_limits or {})
        self.response_headers = response_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = self._request_id(scope)
        request_id_var.set(request_id)
        state: dict[str, Any] = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if self.response_headers is not None:
                    headers += self.response_headers(scope)
                message = {**message, "headers": headers}
            await send(message)

        try:
            bad_parameter = _undecodable_query_parameter(scope.get("query_string", b""))
            body_receive = await self._limited_receive(scope, receive)
            if bad_parameter is not None:
                # Starlette would quietly turn invalid UTF-8 into U+FFFD and search for that.
                await problem_response(
                    422,
                    "VALIDATION_ERROR",
                    "The request does not match the expected schema.",
                    errors=[
                        {
                            "loc": ["query", bad_parameter],
                            "msg": "must be valid UTF-8 text",
                            "type": "unicode_decode",
                        }
                    ],
                )(scope, receive, send_wrapper)
            elif body_receive is None:
                response = problem_response(
                    413, "PAYLOAD_TOO_LARGE", "The request body is too large."
                )
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, body_receive, send_wrapper)
        except Exception:
            _error_logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            await problem_response(500, "INTERNAL_ERROR", "An unexpected error occurred.")(
                scope, receive, send_wrapper
            )
        finally:
            elapsed = time.perf_counter() - started
            observe_request(scope["method"], _route_template(scope), status, elapsed)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request_id,
                    "user_id": state.get("user_id"),
                    "organization_id": state.get("organization_id"),
                },
            )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    return candidate
                break
        return secrets.token_hex(16)  # as random as uuid4().hex, without building a UUID

    async def _limited_receive(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the body up front (bounded); None when it is over the limit."""
        limit = self.body_limits.get(scope["path"], self.max_body_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    return None
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return receive

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # client went away; let the app see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _route_template(scope: Scope) -> str:
    """The matched route's template (`/api/v1/deals/{deal_id}`), never the raw path, so metric
    labels stay few. Routers may report their routes relative to their prefix; the template
    is aligned with the tail of the real path, and the prefix taken from the real path."""
    route_path = getattr(scope.get("route"), "path", None)
    if not isinstance(route_path, str):
        return "unmatched"
    raw_parts = scope["path"].strip("/").split("/")
    route_parts = route_path.strip("/").split("/")
    return "/" + "/".join(raw_parts[: max(0, len(raw_parts) - len(route_parts))] + route_parts)


def _undecodable_query_parameter(query_string: bytes) -> str | None:
    """The name of the first query parameter whose percent-decoded bytes are not UTF-8."""
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        try:
            decoded_name = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return name.decode("latin-1")
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return decoded_name
    return None
