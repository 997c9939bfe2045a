"""Safe retries of POST requests: the `Idempotency-Key` header, as Stripe has it.

A POST that carries `Idempotency-Key` (1..255 characters) runs once per key: its status and
body are kept for `IDEMPOTENCY_TTL_HOURS`, scoped to (credential, organization, method, path,
key), and the same request sent again is answered with them and `Idempotent-Replayed: true`,
without running again. Another body under a used key is 422 `IDEMPOTENCY_KEY_REUSED`; the key
of a request still running is 409 `IDEMPOTENCY_KEY_IN_USE`.

Every POST route of `StrictJSONRoute` gets this (`idempotent`), except those marked
`not_idempotent` (the token-issuing `/auth` routes: a kept answer would be a stored copy of
live tokens). The key is taken when the endpoint is about to run, after authentication, the
tenant and the body were checked: a request refused before that (401, 403, 422) keeps nothing
and its key can be used again, as at Stripe.

Atomicity. The request's session commits after the endpoint returned and its answer was
serialised, before anything is sent (`app.dependencies.db.get_session`). The kept answer is
added to that same transaction, so the write and its answer commit together or not at all:
a client whose connection dropped after the commit finds the answer on retry, and a crash
before the commit leaves neither. On PostgreSQL a transaction-level advisory lock on the key
(taken without waiting, in the statement that looks the key up) makes a concurrent duplicate
a 409 in every worker and instance; the unique key of `idempotency_keys` backs it: a run that
slipped past an answer committed just before it took the lock collides with that answer, is
rolled back and answers with it (`keep_answer`). SQLite runs one writing transaction at a time, so a
duplicate waits for the first and is then answered with its replay.

A 4xx raised by the endpoint is kept too (Stripe does): its changes are rolled back first and
the refusal is written in a fresh transaction. A 5xx is never kept: the key may be retried."""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError, IdempotencyKeyInUse, IdempotencyKeyReused
from app.core.handlers import problem_response
from app.db.session import discard_after_commit
from app.db.types import utcnow
from app.dependencies.db import SessionDep, resources_of
from app.repositories.idempotency import IdempotencyRepository, IdempotencyScope, KeptAnswer

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

# The request header, described once for every operation that honours it.
OPENAPI_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes retrying this request safe: a unique value per operation (a UUID), sent again "
        "unchanged with every retry. The first answer (2xx or 4xx, not 5xx) is kept for 24 "
        f"hours and replayed to a retry with the same body, with `{REPLAYED_HEADER}: true`; "
        "the request does not run twice. Another body under the same key is 422 "
        "`IDEMPOTENCY_KEY_REUSED`; a retry while the first is still running is 409 "
        "`IDEMPOTENCY_KEY_IN_USE`."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}

# Where a request's taken key waits for its answer.
_CLAIM = "minicrm.idempotency"
_WRAPPED = "__minicrm_idempotent__"
_OPTED_OUT = "__minicrm_not_idempotent__"
_REQUEST_PARAM = "minicrm_idempotency_request"
_SESSION_PARAM = "minicrm_idempotency_session"
# Every this many kept answers a worker deletes a batch of expired ones in the same
# transaction: the table cannot grow without bound even if `minicrm prune` never runs.
PRUNE_EVERY = 100
PRUNE_BATCH = 500
_kept_count = itertools.count(1)

Endpoint = Callable[..., Awaitable[Any]]


def not_idempotent(endpoint: Endpoint) -> Endpoint:
    """Mark a POST endpoint whose answer must never be kept or replayed (it issues tokens);
    it ignores `Idempotency-Key`. Put it below the route decorator."""
    setattr(endpoint, _OPTED_OUT, True)
    return endpoint


def applies_to(methods: set[str] | list[str] | None, endpoint: Endpoint) -> bool:
    return "POST" in (methods or ()) and not getattr(endpoint, _OPTED_OUT, False)


def idempotent(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, taking the request's `Idempotency-Key` (if any) just before it runs.

    The wrapper asks FastAPI for the request and the request's session (the same one the
    endpoint's dependencies use) through two extra keyword parameters of its signature; the
    endpoint itself is called with its own arguments only."""
    if getattr(endpoint, _WRAPPED, False):
        return endpoint
    signature = inspect.signature(endpoint, eval_str=True)
    # FastAPI hands the request to one parameter only: the endpoint's own, if it has one.
    own_request = next(
        (
            p.name
            for p in signature.parameters.values()
            if isinstance(p.annotation, type) and issubclass(p.annotation, Request)
        ),
        None,
    )

    @functools.wraps(endpoint)
    async def run_once(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs[own_request] if own_request else kwargs.pop(_REQUEST_PARAM)
        session: AsyncSession = kwargs.pop(_SESSION_PARAM)
        await _take_key(request, session)
        return await endpoint(*args, **kwargs)

    extra = [
        inspect.Parameter(_SESSION_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=SessionDep)
    ]
    if own_request is None:
        extra.append(
            inspect.Parameter(_REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )
    run_once.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    setattr(run_once, _WRAPPED, True)
    return run_once


class Replay(Exception):
    """Raised by the wrapper to answer with a kept response instead of running the endpoint."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(slots=True)
class _Claim:
    scope: IdempotencyScope
    request_hash: str
    repository: IdempotencyRepository
    now: datetime
    expires_at: datetime

    def answer(self, status_code: int, content_type: str, body: bytes) -> KeptAnswer:
        return KeptAnswer(self.request_hash, status_code, content_type, body)


def _valid_key(raw: str) -> str:
    if 1 <= len(raw) <= MAX_KEY_LENGTH:
        return raw
    problem = "too_short" if not raw else "too_long"
    message = (
        "Idempotency-Key must not be empty"
        if not raw
        else f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters"
    )
    raise RequestValidationError(
        [{"type": f"string_{problem}", "loc": ("header", HEADER.lower()), "msg": message}]
    )


async def request_hash_of(request: Request) -> str:
    """What a retry must repeat: the query string and the body, as canonical JSON (so key
    order and spacing do not matter), a form's fields and files, or its bytes."""
    digest = hashlib.sha256(request.scope.get("query_string", b""))
    digest.update(b"\x00")
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        # A form's bytes differ on every send (a random boundary): its fields and files are
        # what a retry repeats. The form is the one the endpoint reads (Starlette keeps it;
        # its body was streamed into it, not kept).
        await _hash_form(request, digest)
        return digest.hexdigest()
    body = await request.body()
    if body:
        try:
            canonical = json.dumps(await request.json(), sort_keys=True, separators=(",", ":"))
            digest.update(canonical.encode())
        except ValueError:
            digest.update(body)
    return digest.hexdigest()


async def _hash_form(request: Request, digest: Any) -> None:
    form = await request.form()
    for name, value in sorted(form.multi_items(), key=lambda item: item[0]):
        digest.update(json.dumps(name).encode() + b"=")
        if isinstance(value, str):
            digest.update(json.dumps(value).encode())
        else:  # a file: its name, its type and its bytes
            digest.update(json.dumps([value.filename, value.content_type]).encode())
            await value.seek(0)
            while chunk := await value.read(1 << 20):
                digest.update(chunk)
            await value.seek(0)
        digest.update(b"\x00")


async def _take_key(request: Request, session: AsyncSession) -> None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return
    key = _valid_key(raw)
    # `user:<id>` or `api_key:<id>`: a key's answers never replay to its creator, nor theirs
    # to the key (set where the credential is verified, `app.dependencies.auth`).
    credential = getattr(request.state, "credential", None)
    if credential is None:
        return  # nobody to scope the key to (routes here always authenticate first)
    scope = IdempotencyScope(
        credential=credential,
        organization_id=getattr(request.state, "organization_id", None) or 0,
        method=request.method,
        path=request.scope["path"],
        key=key,
    )
    request_hash = await request_hash_of(request)
    repository = IdempotencyRepository(session)
    now = utcnow()
    locked, kept = await repository.lock_and_find(scope, now)
    if not locked:
        raise IdempotencyKeyInUse()
    if kept is not None:
        raise Replay(_replay(kept, request_hash))
    ttl = timedelta(hours=resources_of(request).settings.IDEMPOTENCY_TTL_HOURS)
    request.scope[_CLAIM] = _Claim(scope, request_hash, repository, now, now + ttl)


def _replay(kept: KeptAnswer, request_hash: str) -> Response:
    if kept.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return Response(
        content=kept.body,
        status_code=kept.status_code,
        headers={"Content-Type": kept.content_type, REPLAYED_HEADER: "true"},
    )


async def keep_answer(request: Request, response: Response) -> Response:
    """Add the endpoint's answer to its own transaction (committed with its writes); the
    response to send."""
    claim = cast(_Claim | None, request.scope.get(_CLAIM))
    body = getattr(response, "body", None)  # a streamed answer has none to keep
    if claim is None or response.status_code >= 500 or body is None:
        return response
    content_type = response.headers.get("content-type", "application/json")
    repository = claim.repository
    try:
        await repository.add(
            claim.scope,
            claim.answer(response.status_code, content_type, bytes(body)),
            claim.now,
            claim.expires_at,
        )
    except IntegrityError:
        # Another request with this key committed just before this one took it (see
        # `lock_and_find`): undo this run and answer with the other's answer.
        await repository.session.rollback()
        discard_after_commit(repository.session)
        kept = await repository.find(claim.scope, claim.now)
        if kept is None:
            raise
        return _replay(kept, claim.request_hash)
    if next(_kept_count) % PRUNE_EVERY == 0:
        await repository.delete_expired(claim.now, limit=PRUNE_BATCH)
    return response


async def keep_refusal(request: Request, exc: AppError) -> Response | None:
    """The problem response for `exc`, kept under the request's key; None when there is no
    key, or for a 5xx (never kept: re-raise it)."""
    claim = cast(_Claim | None, request.scope.get(_CLAIM))
    if claim is None or exc.status >= 500:
        return None
    response = problem_response(
        exc.status, exc.code, exc.detail, title=exc.title, headers=exc.headers
    )
    session = claim.repository.session
    if not exc.keep_changes:
        await session.rollback()
        discard_after_commit(session)
        # The rollback released the key: another request with it may have begun since.
        if not await claim.repository.try_lock(claim.scope):
            return response
    await claim.repository.add_if_absent(
        claim.scope,
        claim.answer(exc.status, response.headers["content-type"], bytes(response.body)),
        claim.now,
        claim.expires_at,
    )
    return response
