"""On PostgreSQL, filtered lists are planned for their values; point lookups keep cached plans.

asyncpg prepares every statement, and after five runs PostgreSQL may settle on one generic
plan costed without the values: for a filtered list over many rows that plan can be a
thousand times slower than the one for the values at hand (`app.db.session.plan_for_values`).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import AppFactory
from tests.support import create_contact, create_deal

pytestmark = pytest.mark.postgres

RUNS = 8  # more than the five custom plans PostgreSQL makes before it may go generic


async def prepared_plans(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
        rows = [dict(row._mapping) for row in result]
        await conn.rollback()
    return rows


async def test_lists_are_planned_for_their_values_and_point_reads_are_not(
    make_api: AppFactory, pg_url: str
) -> None:
    # One connection, so every request and the checks below share one backend.
    api = await make_api(pg_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)
    user = await api.register()
    contact_id = await create_contact(user)
    deal = await create_deal(user, contact_id, amount="1500.00")
    engine: AsyncEngine = api.app.state.resources.engine

    for run in range(RUNS):
        listed = await user.get(
            "/deals",
            params={"status": "new", "min_amount": 1000 + run, "max_amount": 50000 + run},
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["total"] == 1
        read = await user.get(f"/deals/{deal['id']}")
        assert read.status_code == 200, read.text

    plans = await prepared_plans(engine)
    counts = [p for p in plans if "count(" in p["statement"] and "FROM deals" in p["statement"]]
    pages = [
        p
        for p in plans
        if "FROM deals" in p["statement"]
        and "LIMIT" in p["statement"]
        and "count(" not in p["statement"]
    ]
    point = [
        p for p in plans if "auth_sessions" in p["statement"] and "deals.id =" in p["statement"]
    ]
    seen = [p["statement"][:80] for p in plans]
    assert counts, seen
    assert pages, seen
    assert point, seen
    for plan in (*counts, *pages):
        assert plan["generic_plans"] == 0, plan
        assert plan["custom_plans"] >= RUNS, plan
    # The default came back at each checkout: the point read settled on its cached plan.
    assert sum(p["generic_plans"] for p in point) > 0, point


async def test_the_next_request_gets_the_default_planning_back(
    make_api: AppFactory, pg_url: str
) -> None:
    api = await make_api(pg_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)
    user = await api.register()
    engine: AsyncEngine = api.app.state.resources.engine
    assert (await user.get("/deals", params={"status": "won"})).status_code == 200
    async with engine.connect() as conn:
        mode = (await conn.exec_driver_sql("SHOW plan_cache_mode")).scalar_one()
        await conn.rollback()
    assert mode == "auto"
