"""Prometheus metrics: requests by route template and status, latency, database pool use.

With several worker processes set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by
the workers; `/metrics` then aggregates all of them."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.core.handlers import ROUTABLE_METHODS

REQUESTS = Counter("minicrm_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "minicrm_http_request_duration_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
POOL_CHECKED_OUT = Gauge(
    "minicrm_db_pool_checked_out", "Database connections in use", multiprocess_mode="livesum"
)
POOL_SIZE = Gauge(
    "minicrm_db_pool_size", "Database pool size (idle + in use)", multiprocess_mode="livesum"
)


# The labelled children of one (method, route template, status): looked up once, not on every
# request. Bounded like the labels themselves (templates are few, methods and statuses too).
_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


_METHODS = frozenset(ROUTABLE_METHODS)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    if method not in _METHODS:
        method = "OTHER"  # a client may send any token as a method: keep the label set bounded
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def render(engine: AsyncEngine) -> tuple[bytes, str]:
    pool = engine.pool
    if isinstance(pool, QueuePool):
        POOL_CHECKED_OUT.set(pool.checkedout())
        POOL_SIZE.set(pool.checkedin() + pool.checkedout())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# Webhook deliveries (app/jobs/webhooks.py): attempts by outcome (`succeeded`; `retrying`: failed,
# to be tried again; `failed`: given up), and the lag from an event's commit to its delivery.
WEBHOOK_DELIVERIES = Counter(
    "minicrm_webhook_deliveries_total", "Webhook delivery attempts by outcome", ["outcome"]
)
WEBHOOK_LAG = Histogram(
    "minicrm_webhook_delivery_lag_seconds",
    "From an event's commit to its successful delivery",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0, 600.0, 3600.0),
)
WEBHOOK_QUEUE_LAG = Gauge(
    "minicrm_webhook_queue_lag_seconds",
    "The lag of the last delivery sent (0 when the queue is empty)",
    multiprocess_mode="max",
)
