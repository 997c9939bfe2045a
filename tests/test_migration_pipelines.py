"""Migration 0017 (pipelines) on a database filled before it: every organization gets its
default pipeline, every deal (trashed ones too) is put in it, and every answer a client that
ignores pipelines reads is the same as before (but for the new `pipeline_id`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from sqlalchemy import column, insert, table, text

from alembic import command
from app.db.types import UTCDateTime
from tests.conftest import AppFactory, alembic_config
from tests.support import Api, User, create_contact, create_deal, engine_of, patch_deal

BEFORE = "0016"
STATS = text(
    "SELECT organization_id, currency, status, stage, sum(deal_count), sum(amount_sum), "
    "sum(version) FROM deal_stats GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
)


async def _answers(user: User, deal_ids: list[int]) -> dict[str, Any]:
    """What a client that ignores pipelines reads (`pipeline_id` left out of deals)."""

    def plain(deal: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in deal.items() if key != "pipeline_id"}

    answers: dict[str, Any] = {}
    for deal_id in deal_ids:
        response = await user.get(f"/deals/{deal_id}")
        body = response.json()
        answers[f"deal {deal_id}"] = body["code"] if response.status_code != 200 else plain(body)
    listed = (await user.get("/deals", params={"page_size": 100})).json()
    answers["list"] = [plain(deal) for deal in listed["items"]], listed["total"]
    answers["by stage"] = (await user.get("/deals", params={"stage": "proposal"})).json()["total"]
    summary = (await user.get("/analytics/deals/summary")).json()
    answers["summary"] = {k: v for k, v in summary.items() if k != "weighted_pipeline_value"}
    answers["funnel"] = (await user.get("/analytics/deals/funnel")).json()
    answers["trash"] = (await user.get("/trash")).json()
    return answers


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/migration.db"
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_existing_deals_and_answers_are_unchanged_by_the_upgrade(
    make_api: AppFactory, migrated_url: str
) -> None:
    api: Api = await make_api(migrated_url)
    owner = await api.register(organization_name="Before pipelines")
    other = await api.register(organization_name="Another")
    deals: dict[int, list[int]] = {owner.id: [], other.id: []}
    for user, stages in ((owner, ("proposal", "negotiation", "closed")), (other, ("closed",))):
        contact = await create_contact(user)
        for index, stage in enumerate(stages):
            deal = await create_deal(user, contact, amount=f"{100 + index}.25")
            await patch_deal(user, deal["id"], stage=stage, status="in_progress")
            deals[user.id].append(deal["id"])
        deals[user.id].append((await create_deal(user, contact, currency="EUR"))["id"])
    trashed = deals[owner.id][0]
    assert (await owner.delete(f"/deals/{trashed}")).status_code == 204
    before = {user.id: await _answers(user, deals[user.id]) for user in (owner, other)}
    engine = engine_of(api)
    async with engine.connect() as conn:
        stats_before = (await conn.execute(STATS)).all()
    await engine.dispose()  # no pooled connection holds the tables

    config = alembic_config(migrated_url)
    # Down to the schema before pipelines (the same data as the older version had) ...
    await anyio.to_thread.run_sync(command.downgrade, config, BEFORE)
    async with engine.begin() as conn:
        # ... where an organization founded by the older version has no pipeline yet.
        # (the table as the older version knew it: no `pipelines_version`)
        old = table(
            "organizations",
            column("name"),
            column("created_at", UTCDateTime()),
            column("contacts_version"),
        )
        await conn.execute(
            insert(old).values(name="Old", created_at=datetime.now(UTC), contacts_version=0),
        )
        columns = (await conn.execute(text("SELECT * FROM deals LIMIT 1"))).keys()
        assert "pipeline_id" not in columns
    await engine.dispose()
    await anyio.to_thread.run_sync(command.upgrade, config, "head")

    async with engine.connect() as conn:
        stats_after = (await conn.execute(STATS)).all()
    # The same running totals, with the same data version: no cached entry goes stale.
    assert stats_after == stats_before
    for user in (owner, other):
        assert await _answers(user, deals[user.id]) == before[user.id]
        pipelines = (await user.get("/pipelines")).json()
        assert [(p["name"], p["is_default"], len(p["stages"])) for p in pipelines] == [
            ("Sales pipeline", True, 4)
        ]
        listed = (await user.get("/deals")).json()["items"]
        assert {deal["pipeline_id"] for deal in listed} == {pipelines[0]["id"]}
    # The trashed deal was put in the pipeline too: it comes back in it.
    restored = (await owner.post(f"/deals/{trashed}/restore")).json()
    assert restored["pipeline_id"] == (await owner.get("/pipelines")).json()[0]["id"]
    async with engine.connect() as conn:
        orphans = await conn.scalar(
            text(
                "SELECT count(*) FROM organizations o WHERE NOT EXISTS (SELECT 1 FROM pipelines "
                "p WHERE p.organization_id = o.id AND p.is_default)"
            )
        )
    assert orphans == 0  # the organization the older version founded has its pipeline


async def test_a_downgrade_puts_other_pipelines_deals_on_the_four_stages(
    make_api: AppFactory, migrated_url: str
) -> None:
    """Down again, a deal at a stage of another pipeline goes to the one of the four at its
    stage's position (the foreign key that held it to its pipeline's stages goes first)."""
    api: Api = await make_api(migrated_url)
    owner = await api.register(organization_name="Many pipelines")
    stages = [{"key": key, "name": key, "probability": 50} for key in ("intro", "pilot", "terms")]
    response = await owner.post("/pipelines", json={"name": "Partners", "stages": stages})
    assert response.status_code == 201, response.text
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact, pipeline_id=response.json()["id"])
    await patch_deal(owner, deal["id"], stage="pilot")
    engine = engine_of(api)
    await engine.dispose()
    config = alembic_config(migrated_url)
    await anyio.to_thread.run_sync(command.downgrade, config, BEFORE)
    async with engine.connect() as conn:
        stage = await conn.scalar(text("SELECT stage FROM deals WHERE id = :id"), deal)
    await engine.dispose()
    assert stage == "proposal"  # position 1
    await anyio.to_thread.run_sync(command.upgrade, config, "head")
