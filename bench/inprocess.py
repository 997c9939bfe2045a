"""CPU time per `GET /deals/{id}` with the app called in-process: no server, no HTTP parsing.

    .venv/bin/python -m bench.inprocess [--rounds 12] [--requests 1000]
                                        [--variant app|no-access-log|no-middleware ...]

The app is built as production builds it (`ENVIRONMENT=production`, JSON access log at INFO,
written to the null device; metrics in process memory unless PROMETHEUS_MULTIPROC_DIR is set)
on the benchmark database, with its lifespan, and requests are
fed to it directly as ASGI calls, 16 at a time. Each variant is a separate app in the same
process and their batches alternate round by round, so that the machine's drift weighs on
all of them alike; the figures are process CPU time per request (minimum, lower quartile and
median over the rounds). To compare two versions of the code, run this in both checkouts in
turn, a few times each.

Variants: `app` (as served); `no-access-log` (the `app.access` logger disabled during its
batches); `no-middleware` (without `RequestContextMiddleware`: no request id, body limit,
access log or metrics); `rate-limits` (every request counted against its credential and its
organization, synced through Redis at `BENCH_REDIS_URL`, limits too high to refuse any: its
difference to `app` is the CPU price of rate limiting); `api-key` (the app as served, called
with an admin API key of the organization, minted for the run and deleted after it, instead of
the owner's access token); `floor` (`bench/floor.py`, the
like-for-like floor of `bench.run`, served the same way: the ratio of `app` to it is the
in-process price of the framework stack).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, TextIO

import asyncpg
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import Message, Scope

from app.core.config import Environment
from app.core.middleware import RequestContextMiddleware
from app.main import create_app
from bench import floor
from bench.analytics import login, make_settings, running
from bench.common import (
    BIG_ORG_ID,
    asyncpg_dsn,
    code_fingerprint,
    database_url,
    measured_code,
    table,
)
from bench.load import ensure_dataset

PREFIX = "/api/v1"
CONCURRENCY = 16


def _without_middleware(app: FastAPI) -> None:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestContextMiddleware]


PREPARE: dict[str, Callable[[FastAPI], None]] = {
    "app": lambda app: None,
    "no-access-log": lambda app: None,
    "no-middleware": _without_middleware,
    "rate-limits": lambda app: None,
    "api-key": lambda app: None,
}
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/12"
# Settings a variant changes from the app's (which, as `bench.run`'s main server, has rate
# limits off: one client sends far more than a person's allowance).
OVERRIDES: dict[str, dict[str, Any]] = {
    "rate-limits": {
        "RATE_LIMIT_PER_MINUTE": 10**9,
        "RATE_LIMIT_ORGANIZATION_PER_MINUTE": 10**9,
        "REDIS_URL": REDIS_URL,
    },
}
FLOOR = "floor"
VARIANTS = (*PREPARE, FLOOR)


async def run(variants: list[str], rounds: int, requests: int, log_stream: TextIO) -> None:
    await ensure_dataset()
    url = database_url()
    production: dict[str, Any] = {"ENVIRONMENT": Environment.PRODUCTION, "LOG_LEVEL": "INFO"}
    settings = make_settings(url, **production)
    async with running(settings) as (client, _, _):
        headers = await login(client)
        key: dict[str, Any] | None = None
        if "api-key" in variants:
            minted = await client.post(
                f"{PREFIX}/organizations/{BIG_ORG_ID}/api-keys",
                json={"name": "bench.inprocess", "role": "admin"},
                headers={"Authorization": headers["Authorization"]},
            )
            minted.raise_for_status()
            key = minted.json()

    def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        pairs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return [*pairs, (b"host", b"bench")]

    raw_headers = {name: raw(headers) for name in variants}
    if key is not None:
        raw_headers["api-key"] = raw({**headers, "Authorization": f"Bearer {key['key']}"})
    access_log = logging.getLogger("app.access")
    statuses: set[int] = set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    limited = 0  # responses that carry the rate-limit fields

    async def send(message: Message) -> None:
        nonlocal limited
        if message["type"] == "http.response.start":
            statuses.add(message["status"])
            limited += any(name == b"ratelimit" for name, _ in message["headers"])

    def scope(i: int, headers: list[tuple[bytes, bytes]]) -> Scope:
        path = f"{PREFIX}/deals/{1000 + i % 5000}"
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
            "state": {},
        }

    async def batch(name: str, asgi: Any, n: int) -> None:
        slots = asyncio.Semaphore(CONCURRENCY)
        headers = raw_headers[name]

        async def one(i: int) -> None:
            async with slots:
                await asgi(scope(i, headers), receive, send)

        await asyncio.gather(*(one(i) for i in range(n)))

    async with AsyncExitStack() as stack:
        apps: dict[str, Any] = {}
        for name in variants:
            if name == FLOOR:
                # the floor reads the app's settings from the environment
                os.environ["ENVIRONMENT"] = settings.ENVIRONMENT.value
                os.environ["SECRET_KEY"] = settings.secret_key
                os.environ["DATABASE_URL"] = url
                os.environ.pop("REDIS_URL", None)
                floor_app: Any = floor.app
                apps[name] = (await stack.enter_async_context(LifespanManager(floor_app))).app
                continue
            app = create_app(make_settings(url, **production, **OVERRIDES.get(name, {})))
            PREPARE[name](app)
            apps[name] = (await stack.enter_async_context(LifespanManager(app))).app
        # after create_app, which points the root handler at stdout: keep formatting and
        # writing every line, to nowhere
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log_stream)
        for name, asgi in apps.items():
            await batch(name, asgi, 500)  # warm-up: pool, statement caches, token memory
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for done in range(1, rounds + 1):
            for name, asgi in apps.items():
                access_log.disabled = name == "no-access-log"
                started = time.process_time()
                await batch(name, asgi, requests)
                samples[name].append((time.process_time() - started) / requests * 1e6)
            access_log.disabled = False
            print(f"  round {done}/{rounds} done", flush=True)
    if key is not None:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute("DELETE FROM api_keys WHERE id = $1", key["id"])
        finally:
            await conn.close()
    if statuses != {200}:
        raise SystemExit(f"unexpected statuses: {sorted(statuses)}")
    if "rate-limits" in variants and not limited:
        raise SystemExit("rate-limits: no response carried the RateLimit fields")
    rows = []
    for name, values in samples.items():
        ordered = sorted(values)
        rows.append(
            [
                name,
                f"{ordered[0]:.0f}",
                f"{ordered[len(ordered) // 4]:.0f}",
                f"{statistics.median(ordered):.0f}",
            ]
        )
    print(f"{rounds} rounds of {requests} requests per variant, {CONCURRENCY} at a time")
    print(table(["variant", "min µs", "lower quartile µs", "median µs"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--variant", action="append", choices=VARIANTS, dest="variants")
    args = parser.parse_args()
    at_start = code_fingerprint()
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        asyncio.run(run(args.variants or ["app"], args.rounds, args.requests, devnull))
    print(f"code: {measured_code(at_start)}")


if __name__ == "__main__":
    main()
