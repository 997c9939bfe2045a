"""The floor: the least a Python service can do to answer GET /api/v1/deals/{id} as the app does.

    uvicorn bench.floor:app --workers 2 --host 127.0.0.1 --port PORT

A raw ASGI callable (no framework, no SQLAlchemy at request time), one asyncpg pool per worker,
doing the same work per request as the real endpoint, point by point (docs/benchmarks.md,
"The floor, like for like"; tests/test_bench_floor.py holds it to the app's answers):

- the access token is checked by the app's own `TokenCodec` (PyJWT HS256, the same required
  claims, leeway and checks, and the same per-process cache of verified tokens with the
  expiry checked on every use);
- then `X-Organization-Id` and the deal id are checked for the same range (1 .. 2**63 - 1,
  else 422), in the app's order;
- the database is asked exactly what the app asks: the text of the app's own statement
  (`app.repositories.deals.TENANT_AND_DEAL` for a user's token, compiled once at startup for
  asyncpg, as SQLAlchemy sends it), one round trip on a pooled connection without a transaction (the
  app's read engine runs in AUTOCOMMIT); no row or a revoked login session is 401, no role
  is 403, a row without a deal is 404;
- the answer has the same status, body bytes (`DealRead` as FastAPI renders it: compact JSON,
  UTF-8, money as a JSON number, UTC times with `Z`) and the same `content-type`,
  `content-length`, `etag` and `x-request-id` headers (echoed when sane, else 32 random hex digits).

It leaves out what the framework stack adds on top: routing, dependency solving and
validation by FastAPI, the response model, the access log, metrics, the pool's checkout
events. `bench.run` serves it with the same uvicorn settings and wrk load as the real app; the
ratio of the two is the price of that stack.

Environment: as for the app (`DATABASE_URL` as `postgresql+asyncpg://...`, SECRET_KEY,
ENVIRONMENT, DB_POOL_SIZE, ...): the settings are read by the app's own `Settings`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from app.core.config import Settings
from app.core.errors import AppError
from app.core.middleware import _VALID_REQUEST_ID  # the app's rule for echoing X-Request-ID
from app.core.security import TokenClaims, TokenCodec, TokenType
from app.core.tenancy import Caller
from app.core.versioning import version_of
from app.repositories.deals import TENANT_AND_DEAL

PREFIX = b"/api/v1/deals/"
MAX_ID = 2**63 - 1
DEAL_FIELDS = (  # DealRead, in its order
    "id",
    "organization_id",
    "contact_id",
    "owner_id",
    "title",
    "amount",
    "currency",
    "status",
    "stage",
    "created_at",
    "updated_at",
    "pipeline_id",
    "company_id",
    "custom_fields",
)


def compiled_statement() -> tuple[str, tuple[str, ...]]:
    """The app's `GET /deals/{id}` statement as SQLAlchemy's asyncpg dialect sends it, and the
    names of its parameters in order ($1, $2, ...)."""
    compiled = TENANT_AND_DEAL[Caller].compile(dialect=asyncpg_dialect.dialect())
    return compiled.string, tuple(compiled.positiontup or ())


SQL, PARAMETERS = compiled_statement()
_state: dict[str, Any] = {}


REQUEST_PARAMETERS = ("organization_id", "user_id", "deal_id")
CLAIMS = tuple(f.name for f in fields(TokenClaims))


def check_parameters() -> None:
    """At startup: every parameter of the app's statement is one the floor can fill."""
    unknown = [n for n in PARAMETERS if n not in REQUEST_PARAMETERS and n not in CLAIMS]
    if unknown:
        raise RuntimeError(
            f"the app's GET /deals/{{id}} statement takes {unknown}: teach bench/floor.py"
        )


def parameters(claims: TokenClaims, organization_id: int, deal_id: int) -> list[Any]:
    """The statement's arguments by name: the request's ids, else the token's claim of that
    name (should the statement come to use one, e.g. for a revocation check)."""
    known: dict[str, Any] = {
        "organization_id": organization_id,
        "user_id": claims.user_id,
        "deal_id": deal_id,
    }
    return [known[n] if n in known else getattr(claims, n) for n in PARAMETERS]


def _money(value: Decimal) -> float:
    return float(value)  # as app.schemas.common.MoneyOut


def _utc(value: datetime) -> str:
    # pydantic's JSON form of an aware UTC datetime: ISO 8601 with `Z`
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def render(row: asyncpg.Record) -> bytes:
    body = {name: row[name] for name in DEAL_FIELDS}
    body["amount"] = _money(body["amount"])
    body["created_at"] = _utc(body["created_at"])
    body["updated_at"] = _utc(body["updated_at"])
    # jsonb arrives as its text, which the app's JSON column type decodes as this does.
    body["custom_fields"] = json.loads(body["custom_fields"])
    # as FastAPI's JSONResponse renders
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"x-request-id":
            if _VALID_REQUEST_ID.match(value.decode("latin-1")):
                return value
            break
    return secrets.token_hex(16).encode()


async def _answer(
    send: Any,
    status: int,
    payload: bytes,
    request_id: bytes,
    media: bytes = b"application/json",
    etag: bytes | None = None,
) -> None:
    headers = [
        (b"content-length", str(len(payload)).encode()),
        (b"content-type", media),
        (b"x-request-id", request_id),
    ]
    if etag is not None:
        headers.append((b"etag", etag))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _problem(send: Any, status: int, title: str, request_id: bytes) -> None:
    payload = json.dumps({"status": status, "title": title}).encode()
    await _answer(send, status, payload, request_id, b"application/problem+json")


def _id(text: bytes | None) -> int | None:
    if not text or not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            check_parameters()
            settings = Settings()
            _state["tokens"] = TokenCodec(settings)
            dsn = "postgresql://" + settings.DATABASE_URL.split("://", 1)[1]
            size = settings.DB_POOL_SIZE
            _state["pool"] = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _state["pool"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    request_id = _request_id(headers)
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    if scope["method"] != "GET" or not path.startswith(PREFIX):
        await _problem(send, 404, "Not Found", request_id)
        return
    authorization = organization = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
        elif name == b"x-organization-id":
            organization = value
    # as the app: the token first (a dependency), then the parameters (422)
    scheme, _, token = (authorization or b"").partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        await _problem(send, 401, "Unauthenticated", request_id)
        return
    try:
        claims = _state["tokens"].decode(token.decode("latin-1"), TokenType.ACCESS)
    except AppError:
        await _problem(send, 401, "Invalid token", request_id)
        return
    deal_id = _id(path[len(PREFIX) :])
    organization_id = _id(organization)
    if deal_id is None or organization_id is None:
        await _problem(send, 422, "Invalid deal id or X-Organization-Id", request_id)
        return
    async with _state["pool"].acquire() as conn:
        row = await conn.fetchrow(SQL, *parameters(claims, organization_id, deal_id))
    if row is None or not row["live"]:
        await _problem(send, 401, "Invalid token", request_id)
    elif row["role"] is None:
        await _problem(send, 403, "Not a member", request_id)
    elif row["id"] is None:
        await _problem(send, 404, "Deal not found", request_id)
    else:
        etag = f'"{version_of(row["id"], row["updated_at"])}"'.encode()  # as app.api.conditional
        await _answer(send, 200, render(row), request_id, etag=etag)
