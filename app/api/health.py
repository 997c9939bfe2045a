from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api.routing import StrictJSONRoute
from app.core.metrics import render
from app.dependencies.db import ResourcesDep
from app.schemas.health import Health, Readiness, ReadinessChecks

router = APIRouter(tags=["health"], route_class=StrictJSONRoute)
logger = logging.getLogger(__name__)


@router.get("/health", summary="Liveness")
async def read_health() -> Health:
    """The process is up. Touches nothing else, so it stays cheap under load."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="Readiness: the database (and Redis, if configured) answer",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "A dependency is not reachable (the same body, `status: unavailable`).",
        }
    },
)
async def read_readiness(resources: ResourcesDep) -> JSONResponse:
    """200 when the database and Redis (if configured) answer, else 503. With Redis, the body
    also names its circuit breaker's state (`closed`, `open`, `half_open`): while it is not
    closed, requests are served without Redis (no shared cache; login failures counted per
    process)."""
    checks: ReadinessChecks = {"database": "ok"}
    body: Readiness = {"status": "ok", "checks": checks}
    try:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("readiness: database unavailable: %s", exc)
        checks["database"] = "unavailable"
    if resources.redis is not None:
        # Through the breaker: while it is open this answers at once, and after its reset
        # period this call may be the probe that closes it again.
        checks["redis"] = "ok" if await resources.redis.ping() else "unavailable"
        body["breakers"] = {"redis": resources.redis.breaker.state}
    healthy = all(value == "ok" for value in checks.values())
    body["status"] = "ok" if healthy else "unavailable"
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(resources: ResourcesDep) -> Response:
    body, content_type = render(resources.engine)
    return Response(body, media_type=content_type)
