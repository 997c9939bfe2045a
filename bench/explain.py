"""In-process timings and query plans of the HTTP scenarios' read endpoints.

    .venv/bin/python -m bench.explain

For each path: server time and time inside SQL (median of 6 requests, after the dataset is
warm), the number of statements, then EXPLAIN (ANALYZE, BUFFERS) of every statement but the
membership check. Ends with the deferred-join form of the deep-page deal list (the change
proposed in docs/benchmarks.md), so both plans can be compared on the same data.
"""

from __future__ import annotations

import asyncio
import statistics

from bench.analytics import PREFIX, SqlProbe, _explain, login, make_settings, running
from bench.common import database_url
from bench.load import ensure_dataset

DEALS = "status=won&min_amount=1000&max_amount=50000&order_by=amount"
PATHS = (
    f"{PREFIX}/deals/4242",
    f"{PREFIX}/deals/4242/activities",
    f"{PREFIX}/deals?{DEALS}&page=1",
    f"{PREFIX}/deals?{DEALS}&page=5000",
    f"{PREFIX}/contacts?search=smith",
    f"{PREFIX}/contacts?search=петров",
    f"{PREFIX}/contacts?search=müller",
    f"{PREFIX}/contacts?search=555-00012",
    f"{PREFIX}/deals?cf.source=source_05&page_size=20",
)
WHERE = "organization_id = 1 AND status IN ('won') AND amount >= 1000 AND amount <= 50000"
DEFERRED_JOIN = (
    "SELECT d.* FROM deals d JOIN (SELECT id FROM deals WHERE "
    f"{WHERE} ORDER BY amount DESC, id DESC LIMIT 20 OFFSET 99980) AS page "
    "ON d.organization_id = 1 AND d.id = page.id ORDER BY d.amount DESC, d.id DESC"
)
OFFSET_FORM = (
    f"SELECT * FROM deals WHERE {WHERE} ORDER BY amount DESC, id DESC LIMIT 20 OFFSET 99980"
)


async def run() -> None:
    async with running(make_settings(database_url(), ANALYTICS_CACHE_TTL=0)) as (
        client,
        timer,
        app,
    ):
        headers = await login(client)
        probe = SqlProbe()
        probe.attach(app)
        for path in PATHS:
            server: list[float] = []
            in_sql: list[float] = []
            body: object = None
            for _ in range(6):
                probe.reset()
                response = await client.get(path, headers=headers)
                response.raise_for_status()
                server.append(timer.last * 1000)
                in_sql.append(probe.seconds * 1000)
                body = response.json()
            total = body.get("total") if isinstance(body, dict) else None
            print(
                f"===== GET {path}: total={total} server p50 {statistics.median(server):.1f} ms, "
                f"in SQL {statistics.median(in_sql):.1f} ms, {len(probe.statements)} statements"
            )
            for statement, parameters in list(probe.statements):
                if "memberships" not in statement:
                    print(await _explain(app, statement, parameters))
        probe.detach(app)
        print("===== deep page as LIMIT/OFFSET vs deferred join (same rows, same order)")
        print(await _explain(app, OFFSET_FORM, ()))
        print(await _explain(app, DEFERRED_JOIN, ()))


def main() -> None:
    asyncio.run(ensure_dataset())
    asyncio.run(run())


if __name__ == "__main__":
    main()
