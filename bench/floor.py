"""The floor: the least a Python service can do to answer GET /api/v1/deals/{id}.

    uvicorn bench.floor:app --workers 2 --host 127.0.0.1 --port PORT

A raw ASGI callable (no framework), one asyncpg pool per worker, and the same work per request
as the real endpoint: verify the HS256 access token (PyJWT, the same claims), check the
membership of (X-Organization-Id, user) in `memberships`, fetch the deal scoped to that
organization, answer the same JSON fields. It leaves out what the real service adds on top:
routing and validation, request ids, access log, metrics, the SQLAlchemy session and its
explicit transaction. `bench.run` serves it with the same uvicorn settings and wrk load as the
real app; the ratio of the two is the price of the framework stack.

Environment: DATABASE_URL (as for the app, `postgresql+asyncpg://...`), SECRET_KEY,
DB_POOL_SIZE (default 10, as the app).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import jwt
from starlette.types import Receive, Scope, Send

PREFIX = b"/api/v1/deals/"
MEMBERSHIP_SQL = "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2"
DEAL_SQL = (
    "SELECT id, organization_id, contact_id, owner_id, title, amount, currency, status, stage, "
    "created_at, updated_at FROM deals WHERE organization_id = $1 AND id = $2"
)
_state: dict[str, Any] = {}


def _dsn() -> str:
    url = os.environ["DATABASE_URL"]
    return "postgresql://" + url.split("://", 1)[1]


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, default=_default).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _user_id(authorization: bytes | None) -> int | None:
    if not authorization or not authorization.startswith(b"Bearer "):
        return None
    try:
        claims = jwt.decode(
            authorization[7:].decode("latin-1"),
            _state["secret"],
            algorithms=["HS256"],
            options={"require": ["sub", "type", "iat", "exp", "jti"]},
            leeway=5,
        )
        if claims["type"] != "access":
            return None
        return int(claims["sub"])
    except (jwt.PyJWTError, ValueError, KeyError):
        return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            size = int(os.environ.get("DB_POOL_SIZE", "10"))
            _state["secret"] = os.environ["SECRET_KEY"]
            _state["pool"] = await asyncpg.create_pool(_dsn(), min_size=1, max_size=size)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _state["pool"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    if scope["method"] != "GET" or not path.startswith(PREFIX) or not path[14:].isdigit():
        await _answer(send, 404, {"detail": "not found"})
        return
    deal_id = int(path[14:])
    headers = dict(scope["headers"])
    user_id = _user_id(headers.get(b"authorization"))
    if user_id is None:
        await _answer(send, 401, {"detail": "unauthenticated"})
        return
    try:
        organization_id = int(headers.get(b"x-organization-id", b""))
    except ValueError:
        await _answer(send, 422, {"detail": "X-Organization-Id"})
        return
    async with _state["pool"].acquire() as conn:
        role = await conn.fetchval(MEMBERSHIP_SQL, organization_id, user_id)
        if role is None:
            await _answer(send, 403, {"detail": "not a member"})
            return
        row = await conn.fetchrow(DEAL_SQL, organization_id, deal_id)
    if row is None:
        await _answer(send, 404, {"detail": "not found"})
        return
    await _answer(send, 200, dict(row))
