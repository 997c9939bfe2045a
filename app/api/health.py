from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api.routing import StrictJSONRoute
from app.core.metrics import render
from app.dependencies.db import ResourcesDep

router = APIRouter(tags=["health"], route_class=StrictJSONRoute)
logger = logging.getLogger(__name__)


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    """The process is up. Touches nothing else, so it stays cheap under load."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="Readiness: the database (and Redis, if configured) answer",
    responses={503: {"description": "A dependency is not reachable."}},
)
async def ready(resources: ResourcesDep) -> JSONResponse:
    """200 when the database and Redis (if configured) answer, else 503. With Redis, the body
    also names its circuit breaker's state (`closed`, `open`, `half_open`): while it is not
    closed, requests are served without Redis (no shared cache; login failures counted per
    process)."""
    checks: dict[str, str] = {}
    body: dict[str, object] = {}
    try:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("readiness: database unavailable: %s", exc)
        checks["database"] = "unavailable"
    if resources.redis is not None:
        # Through the breaker: while it is open this answers at once, and after its reset
        # period this call may be the probe that closes it again.
        checks["redis"] = "ok" if await resources.redis.ping() else "unavailable"
        body["breakers"] = {"redis": resources.redis.breaker.state.value}
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks, **body},
        status_code=200 if healthy else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(resources: ResourcesDep) -> Response:
    body, content_type = render(resources.engine)
    return Response(body, media_type=content_type)
