"""`new_deals_last_n_days` from the daily creation counts (`deal_daily_counts`): always equal to
a fresh COUNT over each pipeline's deals, through creates, deletes, currency changes, moves
between pipelines and `created_at` rewrites by any statement, at the edges of the window and
of UTC days; kept by the migrations' triggers, backfilled by the migrations, recomputed by the
rebuild.

Runs on the suite's database: SQLite by default, PostgreSQL with TEST_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import pytest
from sqlalchemy import func, select, text, update

from alembic import command
from app.core.cache import NullCache
from app.models import Deal, Pipeline
from app.repositories.analytics import AnalyticsRepository
from app.repositories.base import live
from app.services import analytics as analytics_service
from app.services import trash
from app.services.read_models import ReadModels
from tests.conftest import AppFactory, alembic_config
from tests.support import Api, User, create_contact, create_deal, engine_of, sessions_of

SUMMARY = "/analytics/deals/summary"
MIDNIGHT = datetime(2025, 3, 10, tzinfo=UTC)  # a UTC day boundary, in the past
MICRO = timedelta(microseconds=1)
CURRENCIES = (None, "USD", "EUR")


@pytest.fixture
async def api(make_api: AppFactory, database_url: str) -> Api:
    # No cache: every summary is computed, so each read checks the counts.
    return await make_api(database_url, ANALYTICS_CACHE_TTL=0)


async def set_created_at(api: Api, deal_id: int, created_at: datetime) -> None:
    """Rewrite a deal's creation time behind the application's back (an UPDATE statement)."""
    async with engine_of(api).begin() as conn:
        await conn.execute(update(Deal).where(Deal.id == deal_id).values(created_at=created_at))


async def fresh_count(
    api: Api, organization_id: int, pipeline_id: int, since: datetime, currency: str | None
) -> int:
    query = select(func.count()).where(
        Deal.organization_id == organization_id,
        Deal.pipeline_id == pipeline_id,
        Deal.created_at >= since,
        live(Deal),
    )
    if currency is not None:
        query = query.where(Deal.currency == currency)
    async with engine_of(api).connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def counted(
    api: Api, organization_id: int, pipeline_id: int, since: datetime, currency: str | None
) -> int:
    async with sessions_of(api)() as session:
        return await AnalyticsRepository(session, organization_id).count_created_since(
            pipeline_id, since, currency
        )


async def pipelines_of(api: Api, organization_id: int) -> list[int]:
    async with engine_of(api).connect() as conn:
        rows = await conn.execute(
            select(Pipeline.id).where(Pipeline.organization_id == organization_id)
        )
        return sorted(rows.scalars())


async def assert_exact(api: Api, organization_id: int, sinces: list[datetime]) -> None:
    for pipeline_id in await pipelines_of(api, organization_id):
        for since in sinces:
            for currency in CURRENCIES:
                expected = await fresh_count(api, organization_id, pipeline_id, since, currency)
                got = await counted(api, organization_id, pipeline_id, since, currency)
                assert got == expected, (pipeline_id, since.isoformat(), currency)


async def create_pipeline(user: User) -> int:
    stages = [
        {"key": key, "name": key.title(), "probability": 50} for key in ("intro", "pilot", "signed")
    ]
    response = await user.post("/pipelines", json={"name": "Partnerships", "stages": stages})
    assert response.status_code == 201, response.text
    pipeline_id: int = response.json()["id"]
    return pipeline_id


async def move_to_pipeline(api: Api, deal_id: int, pipeline_id: int, stage: str) -> None:
    """Move a deal to another pipeline behind the application's back (an UPDATE statement)."""
    async with engine_of(api).begin() as conn:
        await conn.execute(
            update(Deal).where(Deal.id == deal_id).values(pipeline_id=pipeline_id, stage=stage)
        )


def edges(times: list[datetime]) -> list[datetime]:
    """Every time given, a microsecond either side, and the UTC midnights around them."""
    sinces: set[datetime] = set()
    for moment in times:
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        sinces.update({moment, moment - MICRO, moment + MICRO, day, day + timedelta(days=1)})
    return sorted(sinces)


async def place_deal(
    api: Api,
    user: User,
    contact: int,
    created_at: datetime,
    currency: str = "USD",
    pipeline_id: int | None = None,
) -> int:
    deal = await create_deal(user, contact, amount="1", currency=currency, pipeline_id=pipeline_id)
    await set_created_at(api, deal["id"], created_at)
    deal_id: int = deal["id"]
    return deal_id


async def test_counts_stay_exact_through_creates_deletes_and_moves(api: Api) -> None:
    owner = await api.register()
    other = await api.register(organization_name="Other")
    contact = await create_contact(owner)
    org = owner.organization_id
    rng = random.Random(7)
    times = [
        MIDNIGHT,
        MIDNIGHT - MICRO,
        MIDNIGHT + MICRO,
        MIDNIGHT + timedelta(hours=12),
        MIDNIGHT - timedelta(days=1),
        MIDNIGHT + timedelta(days=1) - MICRO,
        MIDNIGHT - timedelta(days=364, hours=3),
        MIDNIGHT - timedelta(days=366),
    ]
    times += [MIDNIGHT - timedelta(seconds=rng.randint(0, 400 * 86400)) for _ in range(12)]
    deals = [await place_deal(api, owner, contact, at, rng.choice(["USD", "EUR"])) for at in times]
    # Another organization's deals, on the same days, never count here.
    elsewhere = await create_contact(other)
    for at in times[:4]:
        await place_deal(api, other, elsewhere, at)
    sinces = edges(times)
    await assert_exact(api, org, sinces)

    # Deletes (through the API).
    for deal_id in deals[::3]:
        assert (await owner.delete(f"/deals/{deal_id}")).status_code == 204
    await assert_exact(api, org, sinces)

    # Currency changes (through the API), across the window's edges.
    for deal_id in deals[1::3]:
        response = await owner.patch(f"/deals/{deal_id}", json={"currency": "GBP"})
        assert response.status_code == 200, response.text
    await assert_exact(api, org, sinces)

    # Moves to another pipeline (through the API), and back and forth behind its back, trashed
    # deals too (plain UPDATE statements).
    (default,) = await pipelines_of(api, org)
    partners = await create_pipeline(owner)
    for deal_id in [d for i, d in enumerate(deals) if i % 3 and i % 2]:
        response = await owner.patch(
            f"/deals/{deal_id}", json={"pipeline_id": partners, "stage": "pilot"}
        )
        assert response.status_code == 200, response.text
    await assert_exact(api, org, sinces)
    for deal_id in deals[::4]:
        await move_to_pipeline(api, deal_id, partners, "intro")
    await move_to_pipeline(api, deals[1], default, "qualification")
    await assert_exact(api, org, sinces)

    # Creation times moved across day boundaries and back (plain UPDATE statements).
    for deal_id, at in zip(deals[2::3], reversed(times), strict=False):
        await set_created_at(api, deal_id, at + timedelta(days=1))
    await set_created_at(api, deals[2], MIDNIGHT)
    await assert_exact(api, org, sinces)

    # New deals, counted where they land.
    for at in times[:3]:
        await place_deal(api, owner, contact, at, "EUR")
        await place_deal(api, owner, contact, at, "EUR", partners)
    await assert_exact(api, org, sinces)

    # Deals in the trash count nowhere, even moved (plain UPDATE statements) ...
    trashed = deals[::3]
    for deal_id, at in zip(trashed, times, strict=False):
        await set_created_at(api, deal_id, at - timedelta(days=2))
    await assert_exact(api, org, sinces)
    # ... restored, they count on the day they were created ...
    for deal_id in trashed[::2]:
        assert (await owner.post(f"/deals/{deal_id}/restore")).status_code == 200
    await assert_exact(api, org, sinces)
    # ... and purging the rest of the trash changes nothing.
    async with sessions_of(api)() as session:
        purged = await trash.purge(session, retention_days=0)
        await session.commit()
    assert purged.deals == len(trashed[1::2])
    await assert_exact(api, org, sinces)


async def test_summary_counts_the_window_exactly_at_a_day_boundary(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`now` is frozen so that the window starts exactly at a UTC midnight."""
    owner = await api.register()
    contact = await create_contact(owner)
    for at in (MIDNIGHT - MICRO, MIDNIGHT, MIDNIGHT + MICRO, MIDNIGHT + timedelta(days=29)):
        await place_deal(api, owner, contact, at)
    await place_deal(api, owner, contact, MIDNIGHT + timedelta(hours=1), "EUR")

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            moment = MIDNIGHT + timedelta(days=30)
            return cls.fromtimestamp(moment.timestamp(), tz)

    monkeypatch.setattr(analytics_service, "datetime", Frozen)

    async def new_deals(days: int, currency: str | None = None) -> int:
        params: dict[str, Any] = {"days": days}
        if currency is not None:
            params["currency"] = currency
        response = await owner.get(SUMMARY, params=params)
        assert response.status_code == 200, response.text
        value: int = response.json()["new_deals_last_n_days"]
        return value

    # The window starts at MIDNIGHT: a deal created at that very instant is in it, one a
    # microsecond earlier (the day before) is not.
    assert await new_deals(30) == 4
    assert await new_deals(30, "USD") == 3
    assert await new_deals(30, "EUR") == 1
    assert await new_deals(31) == 5
    assert await new_deals(1) == 1  # the deal 29 days after MIDNIGHT
    assert await new_deals(365) == 5


async def test_summary_equals_a_fresh_count_for_every_window_and_pipeline(api: Api) -> None:
    owner = await api.register()
    contact = await create_contact(owner)
    (default,) = await pipelines_of(api, owner.organization_id)
    partners = await create_pipeline(owner)
    now = datetime.now(UTC)
    # Half a day away from each window's edge, so the seconds the test takes do not matter.
    for index, age_days in enumerate((0, 0.5, 1.5, 6.5, 29.5, 30.5, 100.5, 364.5, 365.5, 500)):
        currency = "EUR" if age_days in (1.5, 30.5) else "USD"
        pipeline = partners if index % 3 == 1 else None
        at = now - timedelta(days=age_days)
        await place_deal(api, owner, contact, at, currency, pipeline)
    for days in (1, 2, 7, 30, 31, 90, 364, 365):
        for currency in CURRENCIES:
            for pipeline_id in (None, partners):
                params: dict[str, Any] = {"days": days}
                if currency is not None:
                    params["currency"] = currency
                if pipeline_id is not None:
                    params["pipeline_id"] = pipeline_id
                response = await owner.get(SUMMARY, params=params)
                assert response.status_code == 200, response.text
                since = datetime.now(UTC) - timedelta(days=days)
                expected = await fresh_count(
                    api, owner.organization_id, pipeline_id or default, since, currency
                )
                got = response.json()["new_deals_last_n_days"]
                assert got == expected, (days, currency, pipeline_id)


async def test_rebuild_recomputes_the_daily_counts(api: Api) -> None:
    owner = await api.register()
    contact = await create_contact(owner)
    times = [MIDNIGHT - timedelta(days=d, hours=d) for d in range(0, 40, 3)]
    for at in times:
        await place_deal(api, owner, contact, at)
    async with engine_of(api).begin() as conn:
        await conn.execute(text("UPDATE deal_daily_counts SET deal_count = deal_count + 5"))
    (default,) = await pipelines_of(api, owner.organization_id)
    assert await counted(api, owner.organization_id, default, times[-1], None) != len(times)

    async with sessions_of(api)() as session:
        await ReadModels(session, owner.organization_id, NullCache()).rebuild()
        await session.commit()

    await assert_exact(api, owner.organization_id, edges(times))


async def test_the_migration_backfills_existing_deals(api: Api, database_url: str) -> None:
    owner = await api.register()
    contact = await create_contact(owner)
    times = [MIDNIGHT - MICRO, MIDNIGHT, MIDNIGHT + timedelta(hours=5)]
    times += [MIDNIGHT - timedelta(days=d, minutes=d) for d in range(1, 400, 37)]
    for index, at in enumerate(times):
        await place_deal(api, owner, contact, at, "EUR" if index % 2 else "USD")
    await engine_of(api).dispose()  # no pooled connection holds the table

    config = alembic_config(database_url)

    def migrate_down_and_up() -> None:
        try:
            command.downgrade(config, "0006-1")  # the deals stay, their counts go
        finally:
            command.upgrade(config, "head")

    await anyio.to_thread.run_sync(migrate_down_and_up)

    async with engine_of(api).connect() as conn:
        slots = (await conn.execute(text("SELECT DISTINCT slot FROM deal_daily_counts"))).all()
    assert [tuple(row) for row in slots] == [(0,)]
    await assert_exact(api, owner.organization_id, edges(times))


async def test_the_counts_go_per_pipeline_and_back_with_the_migration(
    api: Api, database_url: str
) -> None:
    """Migration 0018 down (counts per organization, as 0006 and 0011 kept them) and up again
    (per pipeline), each time filled from the live deals and kept by its own triggers."""
    owner = await api.register()
    contact = await create_contact(owner)
    org = owner.organization_id
    partners = await create_pipeline(owner)
    times = [MIDNIGHT - timedelta(days=d, hours=d) for d in range(0, 60, 7)]
    deals = [
        await place_deal(api, owner, contact, at, "USD", partners if index % 2 else None)
        for index, at in enumerate(times)
    ]
    assert (await owner.delete(f"/deals/{deals[0]}")).status_code == 204  # in the trash
    await engine_of(api).dispose()  # no pooled connection holds the table
    config = alembic_config(database_url)
    since = {"since": (MIDNIGHT - timedelta(days=30)).date(), "org": org}
    live_per_organization = text(
        "SELECT count(*) FROM deals WHERE organization_id = :org AND deleted_at IS NULL "
        "AND created_at >= :since"
    )
    summed = text(
        "SELECT coalesce(sum(deal_count), 0) FROM deal_daily_counts "
        "WHERE organization_id = :org AND day >= :since"
    )

    await anyio.to_thread.run_sync(command.downgrade, config, "0017")
    try:
        async with engine_of(api).begin() as conn:
            assert await conn.scalar(summed, since) == await conn.scalar(
                live_per_organization, since
            )
            # The old triggers keep the old shape: a deal trashed behind the app's back.
            await conn.execute(
                text("UPDATE deals SET deleted_at = created_at WHERE id = :id"), {"id": deals[3]}
            )
            assert await conn.scalar(summed, since) == await conn.scalar(
                live_per_organization, since
            )
    finally:
        await engine_of(api).dispose()
        await anyio.to_thread.run_sync(command.upgrade, config, "head")

    await assert_exact(api, org, edges(times))
    await move_to_pipeline(api, deals[2], partners, "signed")
    await assert_exact(api, org, edges(times))


async def test_an_organization_deleted_with_its_deals_takes_its_counts(api: Api) -> None:
    """Its deals go by ON DELETE CASCADE; counting them down would recreate count rows for an
    organization that no longer exists (a foreign-key violation)."""
    owner = await api.register()
    other = await api.register(organization_name="Other")
    for user in (owner, other):
        contact = await create_contact(user)
        for days in (0, 3, 40):
            await place_deal(api, user, contact, MIDNIGHT - timedelta(days=days))
    async with engine_of(api).begin() as conn:
        await conn.execute(
            text("DELETE FROM organizations WHERE id = :id"), {"id": owner.organization_id}
        )
        left = await conn.scalar(
            text("SELECT count(*) FROM deal_daily_counts WHERE organization_id = :id"),
            {"id": owner.organization_id},
        )
    assert left == 0
    await assert_exact(api, other.organization_id, edges([MIDNIGHT - timedelta(days=3)]))


async def test_concurrent_creates_currency_moves_and_deletes_stay_exact(
    make_api: AppFactory, pg_url: str
) -> None:
    """On PostgreSQL, writers of one organization run at once: the counts of today's rows
    (split over slots) and of the rows a currency change moves between stay exact."""
    api = await make_api(pg_url, ANALYTICS_CACHE_TTL=0)
    owner = await api.register()
    contact = await create_contact(owner)

    async def create(index: int) -> int:
        deal = await create_deal(owner, contact, f"D{index}", currency=("USD", "EUR")[index % 2])
        deal_id: int = deal["id"]
        return deal_id

    deals = await asyncio.gather(*(create(i) for i in range(40)))

    async def move_or_delete(index: int, deal_id: int) -> None:
        if index % 3 == 0:
            response = await owner.delete(f"/deals/{deal_id}")
            assert response.status_code == 204, response.text
        else:
            currency = ("EUR", "USD")[index % 2]
            response = await owner.patch(f"/deals/{deal_id}", json={"currency": currency})
            assert response.status_code == 200, response.text

    await asyncio.gather(*(move_or_delete(i, d) for i, d in enumerate(deals)))
    await asyncio.gather(*(create(i) for i in range(40, 60)))

    now = datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    await assert_exact(api, owner.organization_id, [day - timedelta(days=1), day, now])
