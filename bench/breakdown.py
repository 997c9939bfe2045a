"""Where the time of a cached analytics request goes (evidence for docs/benchmarks.md).

    .venv/bin/python -m bench.breakdown [--requests 400]

In-process, like bench.analytics. Prints:
- socket writes (≈ PostgreSQL round trips) and worker-thread hops per request, for a cached
  and an uncached funnel and GET /deals/{id};
- the cost of the pieces: JWT decode, one raw asyncpg query, a SQLAlchemy session doing the
  membership SELECT + COMMIT, one threadpool hop, pydantic re-validation of the cached value;
- an interleaved A/B of the cached funnel with the engine's pool_pre_ping on and off
  (flipped on the live pool: `pool._pre_ping`; the app itself is not modified).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.selector_events as selector_events
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.core.security import TokenType
from app.models import Membership
from app.schemas.analytics import DealFunnel
from bench.analytics import PREFIX, login, make_settings, running
from bench.common import BIG_ORG_ID, database_url, table

_counts = {"writes": 0, "hops": 0}
_original_write = selector_events._SelectorSocketTransport.write
_original_run_sync = anyio.to_thread.run_sync


def _counting_write(self: Any, data: Any) -> None:
    _counts["writes"] += 1
    _original_write(self, data)


async def _counting_run_sync(*args: Any, **kwargs: Any) -> Any:
    _counts["hops"] += 1
    return await _original_run_sync(*args, **kwargs)


async def _timed(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def run(requests: int) -> None:
    selector_events._SelectorSocketTransport.write = _counting_write  # type: ignore[method-assign]
    anyio.to_thread.run_sync = _counting_run_sync  # type: ignore[assignment]
    url = database_url()
    async with (
        running(make_settings(url, ANALYTICS_CACHE_TTL=3600)) as (client, timer, app),
        running(make_settings(url, ANALYTICS_CACHE_TTL=0)) as (nclient, _, _),
    ):
        headers = await login(client)
        resources = app.state.resources
        funnel = f"{PREFIX}/analytics/deals/funnel"
        cases = {
            "cached funnel": (client, funnel),
            "uncached funnel": (nclient, funnel),
            "GET /deals/{id}": (client, f"{PREFIX}/deals/4242"),
            "GET /health": (client, "/health"),
        }
        rows = []
        for name, (c, path) in cases.items():
            for _ in range(20):
                await c.get(path, headers=headers)
            _counts.update(writes=0, hops=0)
            for _ in range(100):
                response = await c.get(path, headers=headers)
                response.raise_for_status()
            rows.append([name, _counts["writes"] / 100, _counts["hops"] / 100])
        print(table(["request", "socket writes / request", "thread hops / request"], rows))

        token = headers["Authorization"].split()[1]
        cached_value = (await client.get(funnel, headers=headers)).json()

        async def jwt_decode() -> None:
            # the verification itself: `decode` answers a token it has verified from memory
            resources.tokens._verify(token)

        async def remembered() -> None:
            resources.tokens.decode(token, TokenType.ACCESS)

        async def membership_orm() -> None:
            async with resources.session_factory() as session:
                await session.scalar(
                    select(Membership.role).where(
                        Membership.organization_id == BIG_ORG_ID, Membership.user_id == 1
                    )
                )
                await session.commit()

        async def revalidate() -> None:
            DealFunnel.model_validate(cached_value).model_dump(mode="json")

        async def hop() -> None:
            await run_in_threadpool(lambda: None)

        async with resources.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection

            async def membership_raw() -> None:
                await raw.fetchval(
                    "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2",
                    BIG_ORG_ID,
                    1,
                )

            async def transaction_raw() -> None:
                async with raw.transaction():
                    await membership_raw()

            pieces = [
                ("JWT verification (PyJWT HS256)", jwt_decode),
                ("verified token, remembered", remembered),
                ("membership SELECT, raw asyncpg (1 round trip)", membership_raw),
                ("raw asyncpg BEGIN + SELECT + COMMIT (3 round trips)", transaction_raw),
                ("session + membership SELECT + COMMIT (SQLAlchemy, pre-ping)", membership_orm),
                ("one threadpool hop (run_in_threadpool)", hop),
                ("DealFunnel validate + dump of the cached value", revalidate),
            ]
            timed = [[name, f"{await _timed(fn, requests):.3f}"] for name, fn in pieces]
            await conn.rollback()
        print()
        print(table(["piece", "median ms"], timed))

        pool = resources.engine.pool
        samples: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(10):
            for pre_ping in (True, False):
                pool._pre_ping = pre_ping
                for _ in range(requests // 10):
                    await client.get(funnel, headers=headers)
                    samples[pre_ping].append(timer.last * 1000)
        pool._pre_ping = True
        print()
        print(
            table(
                ["cached funnel", "server p50 ms", "server min ms"],
                [
                    [f"pool_pre_ping={k}", f"{statistics.median(v):.3f}", f"{min(v):.3f}"]
                    for k, v in samples.items()
                ],
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
