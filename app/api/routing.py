"""Stricter JSON bodies than the standard library's defaults.

`json.loads` silently keeps the *last* of repeated keys (`{"role": "member", "role": "admin"}`
would grant admin while a reviewer or proxy reads "member"), accepts UTF-16/32 bodies, and
turns very deep nesting into an unhelpful 400. Every router uses `StrictJSONRoute`, whose
request parses bodies as UTF-8 JSON without duplicate keys; any violation is a 422 like other
malformed JSON.

A body sent as something else than JSON (`text/plain`, a form, XML) is 415, not the 422 FastAPI
gives for it: the client sent the wrong kind of body, not a wrong JSON object. The 415 takes the
place of the body's 422, so authentication and membership are still checked first (401, 403),
and like any refused body it is answered before the endpoint runs: nothing is written. A
route that takes a form (a file upload) answers 415 the same way to a body that is not a form.

The same route class runs a request again whose database connection was dead on arrival,
gives every POST route `Idempotency-Key` (`app.api.idempotency`), answers `HEAD` wherever
`GET` is answered (the GET's status and headers, no body; FastAPI's routes answer only the
methods they name), and answers `If-None-Match` for any GET that sends an `ETag`
(`app.api.conditional`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from functools import cached_property
from typing import Any

from fastapi import Request, Response, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from app.api import idempotency
from app.api.conditional import not_modified
from app.api.rate_limits import forget_counted, is_counted
from app.api.responses import problem_response
from app.core.errors import AppError, UnsupportedMediaType
from app.db.session import lost_before_first_statement

logger = logging.getLogger(__name__)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not valid UTF-8", "", 0) from exc
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError as exc:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from exc
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), "", 0) from exc


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or `application/<anything>+json`; no Content-Type at all is read as
    JSON too, as FastAPI does."""
    if content_type is None:
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def is_form_media_type(content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type in ("multipart/form-data", "application/x-www-form-urlencoded")


class StrictJSONRoute(APIRoute):
    """Parses bodies with `StrictJSONRequest`. Also runs a request once more when the database
    connection it was given turned out to be gone before its first statement (the server
    ended it after checkout): nothing of the request reached the database, so the second run,
    on a fresh connection, is its only effect. A second such failure is answered 503 like any
    lost connection.

    POST routes honour `Idempotency-Key` (`app.api.idempotency`): the endpoint is wrapped so
    the key is taken just before it runs, and `get_route_handler` adds its answer to the
    request's transaction, or answers a retry with the kept one."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if idempotency.applies_to(kwargs.get("methods"), endpoint):
            endpoint = idempotency.idempotent(endpoint)
            extra = kwargs.get("openapi_extra") or {}
            kwargs["openapi_extra"] = {
                **extra,
                "parameters": [*extra.get("parameters", []), idempotency.OPENAPI_PARAMETER],
            }
        super().__init__(path, endpoint, **kwargs)
        self.answers_head = "GET" in (self.methods or ())
        # Errors the machinery every route shares may answer, documented on every route:
        # a body too large (the middleware) or not JSON; a rate limit; the database lost or
        # busy (any route with dependencies reaches it; liveness has none); and anything else.
        statuses = []
        if self.takes_json or self.takes_form:
            statuses += [413, 415]
        if is_counted(self.dependant):
            statuses.append(429)
        if self.dependant.dependencies:
            statuses.append(503)
        for status in statuses:
            self.responses.setdefault(status, problem_response(status))
        self.responses.setdefault("default", problem_response("default"))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["method"] == "HEAD" and self.answers_head:
            return super().matches({**scope, "method": "GET"})
        return super().matches(scope)

    @cached_property
    def takes_json(self) -> bool:
        body = self.body_field
        return body is not None and not isinstance(body.field_info, params.Form)

    @cached_property
    def takes_form(self) -> bool:
        body = self.body_field
        return body is not None and isinstance(body.field_info, params.Form)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[Message] = []

        async def recording_receive() -> Message:
            message = await receive()
            received.append(message)
            return message

        if scope["method"] == "HEAD" and self.answers_head:
            send = _without_body(send)
        # A route without a body reads nothing before the endpoint runs: nothing to replay.
        first_receive = receive if self.body_field is None else recording_receive
        try:
            await self._run(scope, first_receive, send)
            return
        except _RunAgain:
            logger.info(
                "database connection gone before use on %s %s; running the request again",
                scope["method"],
                scope["path"],
            )
        replay = iter(received)

        async def replaying_receive() -> Message:
            return next(replay, None) or await receive()

        scope[_RAN_AGAIN] = True
        forget_counted(scope)
        await self._run(scope, replaying_receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD" and self.answers_head:
            # As GET (`matches`); the request keeps its method, so nothing downstream (the
            # read-only session, metrics, logs) takes it for a GET.
            await self.app(scope, receive, send)
        else:
            await super().handle(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_json = self.takes_json
        takes_form = self.takes_form

        async def strict_handler(request: Request) -> Response:
            # Without a JSON body nothing calls `json()`: no need for a second request object.
            strict = StrictJSONRequest(request.scope, request.receive) if takes_json else request
            try:
                response = await handler(strict)
            except idempotency.Replay as replay:
                return replay.response
            except AppError as exc:
                # Still inside the request's transaction: a 4xx under an Idempotency-Key is
                # kept (its changes rolled back), and then answered here.
                kept = await idempotency.keep_refusal(strict, exc)
                if kept is None:
                    raise
                return kept
            except RequestValidationError:
                # FastAPI validated the raw bytes of a non-JSON body against the model.
                if (
                    takes_json
                    and not is_json_media_type(strict.headers.get("content-type"))
                    and await strict.body()
                ):
                    raise UnsupportedMediaType() from None
                if takes_form and not is_form_media_type(strict.headers.get("content-type")):
                    raise UnsupportedMediaType(
                        "The request body must be a form, sent as multipart/form-data."
                    ) from None
                raise
            except Exception as exc:
                if request.scope.get(_RAN_AGAIN) or not lost_before_first_statement(exc):
                    raise
                # Out through the request's dependencies (its session rolls back) and past the
                # exception handlers, which know nothing of this class, to `handle`.
                raise _RunAgain() from exc
            if strict.method in _READ_METHODS:
                return not_modified(strict, response)
            return await idempotency.keep_answer(strict, response)

        return strict_handler


_READ_METHODS = frozenset({"GET", "HEAD"})


def _without_body(send: Send) -> Send:
    """`send` for a HEAD answered as GET: the same status and headers (Content-Length
    included, as the GET would have it), no body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


class _RunAgain(Exception):
    """Not an error: the signal to run the request again."""


_RAN_AGAIN = "minicrm.ran_again"
