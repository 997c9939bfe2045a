"""Analytics latency at 1M deals, measured in-process (no network, no HTTP server).

    .venv/bin/python -m bench.analytics [--requests 200] [--warmup 20] [--rounds 5] [--json out]
        [--redis-url redis://127.0.0.1:6379/12]

The app is built with `create_app(Settings(...))` and driven through `httpx.ASGITransport`
inside `asgi_lifespan.LifespanManager`. Requests run one at a time. "Server time" is measured
by an ASGI wrapper around the app: from the call of the app to the last body chunk it sends
(routing, auth, membership check, SQL, serialisation; not the httpx client). The client
round-trip and the process CPU time spent inside that window are reported beside it.

The scenarios are interleaved: `--rounds` rounds, each running `requests / rounds` requests of
every scenario in turn, so background load on a shared machine hits all of them alike. The
"best-round p50" column is the lowest per-round median (an estimate for a quiet machine).

Apps: `uncached` has ANALYTICS_CACHE_TTL=0 (the app then uses a NullCache: every request
runs the SQL); `cached` uses the default in-process MemoryCache (TTL raised to 1 h so nothing
expires mid-run); `cached-redis` uses RedisCache on `--redis-url` (default
redis://127.0.0.1:6379/12, flushed before and after: it must belong to the benchmark; as
production with REDIS_URL), skipped when Redis does not answer. Every response's `X-Cache`
header is checked (uncached must be MISS, cached must be HIT after warm-up).

The big organization's deals are spread over three pipelines (`bench.load`): requests without
`pipeline_id` read the default one (most deals), `pipeline=2` the second one, with stages of
its own.

The summary is measured uncached at `days=30` (the default window) and `days=365` side by side,
and the difference of their medians is printed: the window's cost (`new_deals_last_n_days`).

Afterwards a profiling pass records, per request, the number of SQL statements and the time
spent inside them (SQLAlchemy cursor events), and EXPLAIN (ANALYZE, BUFFERS) of each distinct
analytics statement is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Environment, Settings
from app.main import create_app
from bench.common import (
    BENCH_PASSWORD,
    BENCH_SECRET_KEY,
    BIG_ORG_ID,
    OWNER_EMAIL,
    PARTNERSHIPS_PIPELINE_ID,
    code_fingerprint,
    database_url,
    machine_info,
    measured_code,
    percentile,
    table,
)
from bench.load import ensure_dataset

PREFIX = "/api/v1"
REDIS_URL = "redis://127.0.0.1:6379/12"


class ServerTimer:
    """ASGI wrapper: duration from entering the app to its final `http.response.body`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last: float = 0.0
        self.last_cpu: float = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        cpu_started = time.process_time()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - started
                self.last_cpu = time.process_time() - cpu_started

        await self.app(scope, receive, timed_send)


@dataclass
class SqlProbe:
    """Counts statements and time inside the driver, per request (requests are sequential)."""

    statements: list[tuple[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    _started: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.statements.clear()
        self.seconds = 0.0

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self._started.append(time.perf_counter())
        self.statements.append((statement, params))

    def _after(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._started.pop()

    def attach(self, app: FastAPI) -> None:
        engine = app.state.resources.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def detach(self, app: FastAPI) -> None:
        engine = app.state.resources.engine.sync_engine
        event.remove(engine, "before_cursor_execute", self._before)
        event.remove(engine, "after_cursor_execute", self._after)


def make_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": url,
        "ENVIRONMENT": Environment.TEST,
        "SECRET_KEY": BENCH_SECRET_KEY,
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": None,
        # One client sends thousands of requests a minute: the limits would answer 429.
        "RATE_LIMIT_PER_MINUTE": 0,
        "RATE_LIMIT_ORGANIZATION_PER_MINUTE": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerTimer, FastAPI]]:
    app = create_app(settings)
    timer = ServerTimer(app)
    async with LifespanManager(timer) as manager:  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield client, timer, app


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post(
        f"{PREFIX}/auth/login", json={"email": OWNER_EMAIL, "password": BENCH_PASSWORD}
    )
    response.raise_for_status()
    token = response.json()["access_token"]
    return {"Authorization": f"Bearer {token}", "X-Organization-Id": str(BIG_ORG_ID)}


@dataclass
class Scenario:
    app: str
    endpoint: str
    query: str
    path: str
    params: dict[str, str]
    expect_cache: str
    server_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    round_p50: list[float] = field(default_factory=list)
    cache_headers: dict[str, int] = field(default_factory=dict)

    def row(self) -> list[object]:
        return [
            self.app,
            self.endpoint,
            self.query or "-",
            len(self.server_ms),
            f"{statistics.median(self.server_ms):.2f}",
            f"{percentile(self.server_ms, 95):.2f}",
            f"{min(self.round_p50):.2f}",
            f"{statistics.median(self.cpu_ms):.2f}",
            f"{statistics.median(self.client_ms):.2f}",
            ",".join(f"{k}:{v}" for k, v in sorted(self.cache_headers.items())),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "endpoint": self.endpoint,
            "query": self.query,
            "n": len(self.server_ms),
            "server_p50_ms": statistics.median(self.server_ms),
            "server_p95_ms": percentile(self.server_ms, 95),
            "best_round_p50_ms": min(self.round_p50),
            "server_cpu_p50_ms": statistics.median(self.cpu_ms),
            "client_p50_ms": statistics.median(self.client_ms),
            "client_p95_ms": percentile(self.client_ms, 95),
            "x_cache": self.cache_headers,
        }


HEADERS = [
    "app",
    "endpoint",
    "query",
    "n",
    "server p50 ms",
    "server p95 ms",
    "best-round p50 ms",
    "server CPU p50 ms",
    "client p50 ms",
    "X-Cache",
]


def load_average() -> float:
    with open("/proc/loadavg", encoding="ascii") as fh:
        return float(fh.read().split()[0])


async def _get(client: httpx.AsyncClient, sc: Scenario, headers: dict[str, str]) -> httpx.Response:
    response = await client.get(sc.path, params=sc.params, headers=headers)
    if response.status_code != 200:
        raise SystemExit(f"{sc.path} {sc.params}: {response.status_code} {response.text}")
    return response


async def measure_round(
    client: httpx.AsyncClient,
    timer: ServerTimer,
    headers: dict[str, str],
    sc: Scenario,
    requests: int,
) -> None:
    server: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        response = await _get(client, sc, headers)
        elapsed = time.perf_counter() - started
        server.append(timer.last * 1000)
        sc.cpu_ms.append(timer.last_cpu * 1000)
        sc.client_ms.append(elapsed * 1000)
        state = response.headers.get("X-Cache", "-")
        sc.cache_headers[state] = sc.cache_headers.get(state, 0) + 1
        if state != sc.expect_cache:
            raise SystemExit(f"{sc.path} {sc.params}: X-Cache {state}, expected {sc.expect_cache}")
    sc.server_ms.extend(server)
    sc.round_p50.append(statistics.median(server))


ENDPOINTS = (
    ("summary", f"{PREFIX}/analytics/deals/summary"),
    ("funnel", f"{PREFIX}/analytics/deals/funnel"),
)


_PARTNERSHIPS = {"pipeline_id": str(PARTNERSHIPS_PIPELINE_ID)}


def _variants(endpoint: str, extra: bool) -> Iterator[tuple[str, dict[str, str]]]:
    # Without `pipeline_id`: the default pipeline (most of the deals); `pipeline=2`: the
    # big organization's second pipeline, with stages of its own.
    if endpoint != "summary":  # the funnel has no `days`
        yield "", {}
        yield "currency=EUR", {"currency": "EUR"}
        yield "pipeline=2", _PARTNERSHIPS
        return
    yield "days=30", {"days": "30"}
    yield "pipeline=2", {"days": "30", **_PARTNERSHIPS}
    if extra:
        yield "days=365", {"days": "365"}
    yield "currency=EUR", {"currency": "EUR"}
    if extra:
        yield "days=365&currency=EUR", {"days": "365", "currency": "EUR"}


def window_cost(scenarios: list[Scenario]) -> list[list[object]]:
    """Uncached summary at days=365 beside days=30: what the longer window costs."""
    by_query = {
        sc.query: sc for sc in scenarios if sc.app == "uncached" and sc.endpoint == "summary"
    }
    rows: list[list[object]] = []
    for short, long in (("days=30", "days=365"), ("currency=EUR", "days=365&currency=EUR")):
        if short in by_query and long in by_query:
            a, b = by_query[short], by_query[long]
            rows.append(
                [
                    short,
                    f"{statistics.median(a.server_ms):.2f}",
                    long,
                    f"{statistics.median(b.server_ms):.2f}",
                    f"{statistics.median(b.server_ms) - statistics.median(a.server_ms):+.2f}",
                    f"{min(b.round_p50) - min(a.round_p50):+.2f}",
                ]
            )
    return rows


async def _redis_available(redis_url: str) -> bool:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await redis.ping())
    except Exception:  # any failure: skip the Redis variant
        return False
    finally:
        await redis.aclose()


async def profile_sql(
    apps: dict[str, tuple[httpx.AsyncClient, ServerTimer, FastAPI]], headers: dict[str, str]
) -> tuple[list[list[object]], list[str]]:
    """Statements per request and time inside them, then EXPLAIN ANALYZE of each statement."""
    rows: list[list[object]] = []
    explained: list[str] = []
    seen: set[str] = set()
    for app_name in ("uncached", "cached"):
        client, timer, app = apps[app_name]
        probe = SqlProbe()
        probe.attach(app)
        for name, path in ENDPOINTS:
            for label, params in _variants(name, extra=app_name == "uncached"):
                db_ms: list[float] = []
                total_ms: list[float] = []
                statements: list[tuple[str, Any]] = []
                for i in range(70):
                    probe.reset()
                    response = await client.get(path, params=params, headers=headers)
                    response.raise_for_status()
                    if i >= 20:
                        db_ms.append(probe.seconds * 1000)
                        total_ms.append(timer.last * 1000)
                        statements = list(probe.statements)
                rows.append(
                    [
                        app_name,
                        name,
                        label or "-",
                        len(statements),
                        f"{statistics.median(total_ms):.2f}",
                        f"{statistics.median(db_ms):.2f}",
                    ]
                )
                for statement, parameters in statements:
                    key = " ".join(statement.split())
                    if "created_at >=" in key:  # plan depends on the window (days)
                        key += label
                    if key in seen:
                        continue
                    seen.add(key)
                    explained.append(await _explain(app, statement, parameters))
        probe.detach(app)
    return rows, explained


async def _explain(app: FastAPI, statement: str, parameters: Any) -> str:
    engine = app.state.resources.engine
    args = list(parameters) if isinstance(parameters, list | tuple) else []
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        # the asyncpg dialect renders positional `$n` placeholders; run 3x, keep the last
        for _ in range(3):
            lines = await driver.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *args)
        await conn.rollback()
    plan = "\n".join(r[0] for r in lines)
    return f"-- {' '.join(statement.split())}\n-- params: {args}\n{plan}"


async def run(
    requests: int, warmup: int, rounds: int, explain: bool, redis_url: str = REDIS_URL
) -> dict[str, Any]:
    code_at_start = code_fingerprint()
    url = database_url()
    settings: dict[str, tuple[Settings, str]] = {
        "uncached": (make_settings(url, ANALYTICS_CACHE_TTL=0), "MISS"),
        "cached": (make_settings(url, ANALYTICS_CACHE_TTL=3600), "HIT"),
    }
    if await _redis_available(redis_url):
        settings["cached-redis"] = (
            make_settings(url, ANALYTICS_CACHE_TTL=3600, REDIS_URL=redis_url),
            "HIT",
        )
    scenarios: list[Scenario] = []
    for app_name, (_, expect) in settings.items():
        for name, path in ENDPOINTS:
            for label, params in _variants(name, extra=app_name == "uncached"):
                scenarios.append(Scenario(app_name, name, label, path, params, expect))
    # reference: the cheapest route (no auth, no database) through the same middleware stack
    scenarios.append(Scenario("cached", "GET /health (reference)", "", "/health", {}, "-"))

    per_round = max(1, requests // rounds)
    loads: list[float] = []
    server_version = ""
    async with contextlib.AsyncExitStack() as stack:
        apps: dict[str, tuple[httpx.AsyncClient, ServerTimer, FastAPI]] = {}
        headers: dict[str, str] = {}
        for app_name, (app_settings, _) in settings.items():
            apps[app_name] = await stack.enter_async_context(running(app_settings))
            client, _, app = apps[app_name]
            if app.state.resources.redis is not None:
                await app.state.resources.redis.client.flushdb()  # db 12 belongs to the benchmark
            headers = await login(client)
        async with apps["uncached"][2].state.resources.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            server_version = await raw.driver_connection.fetchval("SHOW server_version")
        for sc in scenarios:  # warm-up (and fill the caches)
            client, _, _ = apps[sc.app]
            for _ in range(warmup):
                await _get(client, sc, headers)
        for r in range(rounds):
            loads.append(load_average())
            for sc in scenarios:
                client, timer, _ = apps[sc.app]
                await measure_round(client, timer, headers, sc, per_round)
            print(f"  round {r + 1}/{rounds} done (load {loads[-1]:.1f})", flush=True)
        loads.append(load_average())
        profile_rows: list[list[object]] = []
        plans: list[str] = []
        if explain:
            profile_rows, plans = await profile_sql(apps, headers)
        for _, _, app in apps.values():
            if app.state.resources.redis is not None:
                await app.state.resources.redis.client.flushdb()

    print()
    print(f"machine: {machine_info(server_version)}")
    print(f"code: {measured_code(code_at_start)}")
    print(
        f"{per_round * rounds} requests per row ({rounds} interleaved rounds of {per_round}) "
        f"after {warmup} warm-up requests; sequential, in-process"
    )
    print(f"1-min load average during the rounds: {min(loads):.1f} .. {max(loads):.1f}")
    print()
    print(table(HEADERS, [sc.row() for sc in scenarios]))
    window_rows = window_cost(scenarios)
    if window_rows:
        print()
        print("uncached summary: the longer window beside the default one (server time)")
        print(
            table(
                ["query", "p50 ms", "query", "p50 ms", "p50 diff ms", "best-round p50 diff ms"],
                window_rows,
            )
        )
    if explain:
        print()
        print("50 requests each: SQL statements per request and time inside them")
        print(
            table(
                ["app", "endpoint", "query", "statements", "server p50 ms", "in SQL p50 ms"],
                profile_rows,
            )
        )
        for plan in plans:
            print()
            print(plan)
    return {
        "machine": machine_info(server_version),
        "code": measured_code(code_at_start),
        "requests": per_round * rounds,
        "rounds": rounds,
        "warmup": warmup,
        "load_average": [min(loads), max(loads)],
        "results": [sc.as_dict() for sc in scenarios],
        "window_cost": window_rows,
        "sql_profile": profile_rows,
        "plans": plans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--json", dest="json_path", help="also write the figures as JSON")
    parser.add_argument("--no-explain", action="store_true", help="skip the SQL profile")
    parser.add_argument("--no-load", action="store_true", help="do not check/load the dataset")
    parser.add_argument(
        "--redis-url",
        default=REDIS_URL,
        help="Redis db of the benchmark (flushed before and after)",
    )
    args = parser.parse_args()
    if not args.no_load:
        asyncio.run(ensure_dataset())
    payload = asyncio.run(
        run(args.requests, args.warmup, args.rounds, not args.no_explain, args.redis_url)
    )
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
