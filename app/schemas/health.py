"""The health endpoints' bodies, for the documentation: the routes build them as plain JSON."""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from app.core.redis import BreakerState

CheckState = Literal["ok", "unavailable"]


class Health(TypedDict):
    status: Literal["ok"]


class ReadinessChecks(TypedDict):
    database: CheckState
    redis: NotRequired[CheckState]  # only when Redis is configured


class Breakers(TypedDict):
    redis: BreakerState


class Readiness(TypedDict):
    status: CheckState
    checks: ReadinessChecks
    breakers: NotRequired[Breakers]  # only when Redis is configured
