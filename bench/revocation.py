"""What the session-revocation check costs `GET /deals/{id}` in the database.

    .venv/bin/python -m bench.revocation [--rounds 8] [--requests 5000] [--concurrency 8]

The app reads the caller's login session (not revoked), their membership and the deal in one
statement (`app.repositories.deals.TENANT_AND_DEAL`). This sends that statement, compiled as
SQLAlchemy sends it, and the same statement without the login session (membership and deal
only, as before sessions were checked), alternating round by round on one asyncpg pool, for
random deals of the big organization and its members' live sessions. It prints the
statements' throughput and the time each costs per call: the difference is what the check
adds to a request's round trip, to be set against what a whole request costs (see the
`GET /deals/{id}` figures of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import asyncpg
from sqlalchemy import and_, bindparam, literal_column, select
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from app.core.tenancy import Caller
from app.models import Deal, Membership
from app.repositories.deals import TENANT_AND_DEAL
from bench.common import BIG_ORG_ID, asyncpg_dsn, code_fingerprint, database_url
from bench.load import ensure_dataset


def _compiled(statement: Any) -> tuple[str, tuple[str, ...]]:
    compiled = statement.compile(dialect=asyncpg_dialect.dialect())
    return compiled.string, tuple(compiled.positiontup or ())


def _without_session() -> Any:
    """`TENANT_AND_DEAL` less the login session: membership LEFT JOIN the deal."""
    memberships, deals = Membership.__table__, Deal.__table__
    organization: Any = bindparam("organization_id")
    return (
        select(literal_column("true").label("live"), memberships.c.role, *deals.c)
        .select_from(
            memberships.outerjoin(
                deals,
                and_(deals.c.organization_id == organization, deals.c.id == bindparam("deal_id")),
            )
        )
        .where(memberships.c.user_id == bindparam("user_id"))
        .where(memberships.c.organization_id == organization)
    )


VARIANTS = {
    "with the session check (as served)": _compiled(TENANT_AND_DEAL[Caller]),
    "without it": _compiled(_without_session()),
}


async def _open_sessions(pool: asyncpg.Pool) -> list[dict[str, int]]:
    """A live login session for each member of the big organization (deleted at the end)."""
    rows = await pool.fetch(
        "INSERT INTO auth_sessions (user_id, created_at) "
        "SELECT user_id, now() FROM memberships WHERE organization_id = $1 "
        "RETURNING id AS session_id, user_id",
        BIG_ORG_ID,
    )
    return [dict(row) for row in rows]


async def _round(
    pool: asyncpg.Pool,
    sql: str,
    names: tuple[str, ...],
    callers: list[dict[str, int]],
    max_deal: int,
    requests: int,
    concurrency: int,
) -> float:
    """Calls per second of `sql` for `requests` random callers and deals."""
    rng = random.Random(7)
    arguments = []
    for _ in range(requests):
        values = {
            **rng.choice(callers),
            "organization_id": BIG_ORG_ID,
            "deal_id": rng.randint(1, max_deal),
        }
        arguments.append([values[name] for name in names])

    async def worker(share: list[list[Any]]) -> None:
        async with pool.acquire() as conn:
            for args in share:
                row = await conn.fetchrow(sql, *args)
                assert row is not None
                assert row["role"] is not None

    started = time.perf_counter()
    await asyncio.gather(*(worker(arguments[i::concurrency]) for i in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def main(rounds: int, requests: int, concurrency: int) -> None:
    await ensure_dataset()
    url = database_url()
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=concurrency, max_size=concurrency)
    callers = await _open_sessions(pool)
    try:
        max_deal = await pool.fetchval(
            "SELECT max(id) FROM deals WHERE organization_id = $1", BIG_ORG_ID
        )
        rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for sql, names in VARIANTS.values():  # warm-up
            await _round(pool, sql, names, callers, max_deal, requests // 5, concurrency)
        for number in range(rounds):
            order = list(VARIANTS.items())
            if number % 2:
                order.reverse()
            for variant, (sql, names) in order:
                rate = await _round(pool, sql, names, callers, max_deal, requests, concurrency)
                rates[variant].append(rate)
    finally:
        await pool.execute(
            "DELETE FROM auth_sessions WHERE id = ANY($1::bigint[])",
            [caller["session_id"] for caller in callers],
        )
        await pool.close()
    print(f"code: {code_fingerprint()}")
    print(
        f"{rounds} rounds of {requests} statements per variant, {concurrency} connections, "
        f"random deals of organization {BIG_ORG_ID}, alternating"
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(
            f"  {name:36} median {medians[name]:8,.0f} statements/s "
            f"({1e6 / medians[name]:6.1f} us of machine time each; rounds "
            f"{', '.join(f'{v:,.0f}' for v in values)})"
        )
    served, bare = medians[next(iter(VARIANTS))], medians["without it"]
    extra_us = 1e6 / served - 1e6 / bare
    print(f"the session check adds {extra_us:.1f} us per statement ({bare / served - 1:+.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests, args.concurrency))
