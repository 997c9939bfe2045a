"""Pipelines (contract section 17): data, not an enum; the rules of deals in them; stage
management with moves; analytics per pipeline that stay exact through every change."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    Api,
    Team,
    User,
    assert_problem,
    create_contact,
    create_deal,
    patch_deal,
    read_deal,
)
from tests.test_imports import run_all

DEFAULT_STAGES = [
    {"key": "qualification", "name": "Qualification", "position": 0, "probability": 10},
    {"key": "proposal", "name": "Proposal", "position": 1, "probability": 40},
    {"key": "negotiation", "name": "Negotiation", "position": 2, "probability": 70},
    {"key": "closed", "name": "Closed", "position": 3, "probability": 100},
]
PARTNERS = {
    "name": "Partnerships",
    "stages": [
        {"key": "intro", "name": "Intro call", "probability": 20},
        {"key": "pilot", "name": "Pilot", "probability": 50},
        {"key": "terms", "name": "Terms", "probability": 80},
        {"key": "signed", "name": "Signed", "probability": 100},
    ],
}
SUMMARY = "/analytics/deals/summary"
FUNNEL = "/analytics/deals/funnel"

# The running totals (over their slots) against the live deals themselves, per pipeline.
STATS_SQL = text(
    "SELECT organization_id, pipeline_id, currency, status, stage, sum(deal_count), "
    "sum(amount_sum) FROM deal_stats GROUP BY 1, 2, 3, 4, 5 "
    "HAVING sum(deal_count) <> 0 OR sum(amount_sum) <> 0"
)
DEALS_SQL = text(
    "SELECT organization_id, pipeline_id, currency, status, stage, count(*), sum(amount) "
    "FROM deals WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4, 5"
)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def assert_totals_exact(engine: AsyncEngine) -> None:
    def normalise(rows: Any) -> set[tuple[Any, ...]]:
        return {
            (int(o), int(p), str(c), str(s), str(st), int(n), Decimal(str(a)))
            for o, p, c, s, st, n, a in rows
        }

    async with engine.connect() as conn:
        stats = normalise((await conn.execute(STATS_SQL)).all())
        fresh = normalise((await conn.execute(DEALS_SQL)).all())
    assert stats == fresh


async def default_pipeline(user: User) -> dict[str, Any]:
    pipelines = ok(await user.get("/pipelines"))
    [default] = [p for p in pipelines if p["is_default"]]
    return default  # type: ignore[no-any-return]


async def partners(user: User) -> dict[str, Any]:
    return ok(await user.post("/pipelines", json=PARTNERS), 201)  # type: ignore[no-any-return]


@pytest.fixture
async def engine_(api: Api) -> AsyncEngine:
    return api.app.state.resources.engine  # type: ignore[no-any-return]


# --- the default pipeline ------------------------------------------------------------------


async def test_every_organization_starts_with_the_default_pipeline(api: Api, owner: User) -> None:
    default = await default_pipeline(owner)
    assert default["name"] == "Sales pipeline"
    assert default["stages"] == DEFAULT_STAGES
    created = ok(await owner.post("/organizations", json={"name": "Second"}), 201)
    second = ok(await owner.get("/pipelines", headers=owner.headers(created["id"])))
    assert [p["stages"] for p in second] == [DEFAULT_STAGES]
    assert second[0]["id"] != default["id"]

    # A client that ignores pipelines: deals land in the default one, at its first stage.
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact)
    assert (deal["pipeline_id"], deal["stage"]) == (default["id"], "qualification")
    assert (await read_deal(owner, deal["id"]))["pipeline_id"] == default["id"]


async def test_the_default_cannot_be_unset_deleted_or_doubled(owner: User) -> None:
    default = await default_pipeline(owner)
    other = await partners(owner)
    assert other["is_default"] is False
    assert_problem(
        await owner.patch(f"/pipelines/{default['id']}", json={"is_default": False}),
        400,
        "DEFAULT_PIPELINE_REQUIRED",
    )
    assert_problem(await owner.delete(f"/pipelines/{default['id']}"), 409, "PIPELINE_IS_DEFAULT")
    switched = ok(await owner.patch(f"/pipelines/{other['id']}", json={"is_default": True}))
    assert switched["is_default"] is True
    pipelines = ok(await owner.get("/pipelines"))
    assert [p["id"] for p in pipelines if p["is_default"]] == [other["id"]]
    # New deals now start in the new default, at its first stage.
    deal = await create_deal(owner, await create_contact(owner))
    assert (deal["pipeline_id"], deal["stage"]) == (other["id"], "intro")


# --- managing pipelines --------------------------------------------------------------------


async def test_only_owner_and_admin_manage_pipelines_everyone_reads(team: Team) -> None:
    created = ok(await team.admin.post("/pipelines", json=PARTNERS), 201)
    assert [s["key"] for s in created["stages"]] == ["intro", "pilot", "terms", "signed"]
    assert [s["position"] for s in created["stages"]] == [0, 1, 2, 3]
    for user in (team.manager, team.member):
        assert_problem(await user.post("/pipelines", json=PARTNERS), 403, "PERMISSION_DENIED")
        assert_problem(
            await user.patch(f"/pipelines/{created['id']}", json={"name": "X"}),
            403,
            "PERMISSION_DENIED",
        )
        assert ok(await user.get(f"/pipelines/{created['id']}")) == created


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Empty", "stages": []},
        {"name": "Twice", "stages": [{"key": "a", "name": "A", "probability": 1}] * 2},
        {"name": "Bad key", "stages": [{"key": "Big Deal", "name": "A", "probability": 1}]},
        {"name": "Odds", "stages": [{"key": "a", "name": "A", "probability": 101}]},
    ],
)
async def test_invalid_pipelines_are_422(owner: User, body: dict[str, Any]) -> None:
    assert_problem(await owner.post("/pipelines", json=body), 422, "VALIDATION_ERROR")


async def test_another_organizations_pipeline_is_not_found(api: Api, owner: User) -> None:
    stranger = await api.register(organization_name="Other")
    theirs = await partners(stranger)
    for response in (
        await owner.get(f"/pipelines/{theirs['id']}"),
        await owner.patch(f"/pipelines/{theirs['id']}", json={"name": "Mine"}),
        await owner.delete(f"/pipelines/{theirs['id']}"),
        await owner.get(SUMMARY, params={"pipeline_id": theirs["id"]}),
        await owner.get(FUNNEL, params={"pipeline_id": theirs["id"]}),
    ):
        assert_problem(response, 404, "PIPELINE_NOT_FOUND")
    contact = await create_contact(owner)
    response = await owner.post(
        "/deals", json={"contact_id": contact, "title": "D", "pipeline_id": theirs["id"]}
    )
    assert_problem(response, 400, "PIPELINE_NOT_FOUND")


async def test_a_pipeline_with_deals_even_in_the_trash_is_not_deleted(owner: User) -> None:
    pipeline = await partners(owner)
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact, pipeline_id=pipeline["id"])
    assert deal["stage"] == "intro"
    assert (await owner.delete(f"/deals/{deal['id']}")).status_code == 204
    assert_problem(await owner.delete(f"/pipelines/{pipeline['id']}"), 409, "PIPELINE_HAS_DEALS")
    restored = ok(await owner.post(f"/deals/{deal['id']}/restore"))
    assert restored["pipeline_id"] == pipeline["id"]
    default = await default_pipeline(owner)
    ok(await owner.patch(f"/deals/{deal['id']}", json={"pipeline_id": default["id"]}))
    assert (await owner.delete(f"/pipelines/{pipeline['id']}")).status_code == 204
    assert_problem(await owner.get(f"/pipelines/{pipeline['id']}"), 404, "PIPELINE_NOT_FOUND")


# --- deals in pipelines --------------------------------------------------------------------


async def test_a_deals_stage_is_one_of_its_pipelines(owner: User) -> None:
    pipeline = await partners(owner)
    contact = await create_contact(owner)
    mine = await create_deal(owner, contact, pipeline_id=pipeline["id"])
    sales = await create_deal(owner, contact)
    # A key of another of the organization's pipelines: 400; a key of none: 422, as before.
    response = await owner.patch(f"/deals/{mine['id']}", json={"stage": "proposal"})
    assert_problem(response, 400, "STAGE_NOT_IN_PIPELINE")
    response = await owner.patch(f"/deals/{sales['id']}", json={"stage": "pilot"})
    assert_problem(response, 400, "STAGE_NOT_IN_PIPELINE")
    body = assert_problem(
        await owner.patch(f"/deals/{mine['id']}", json={"stage": "won"}), 422, "VALIDATION_ERROR"
    )
    assert body["errors"][0]["loc"] == ["body", "stage"]
    moved = await patch_deal(owner, mine["id"], stage="terms")
    assert moved["stage"] == "terms"


async def test_the_list_filters_on_any_pipelines_stages_and_refuses_unknown_ones(
    owner: User,
) -> None:
    pipeline = await partners(owner)
    contact = await create_contact(owner)
    mine = await create_deal(owner, contact, pipeline_id=pipeline["id"])
    await create_deal(owner, contact)
    page = ok(await owner.get("/deals", params={"stage": "intro"}))
    assert [d["id"] for d in page["items"]] == [mine["id"]]
    page = ok(await owner.get("/deals", params={"pipeline_id": pipeline["id"]}))
    assert [d["id"] for d in page["items"]] == [mine["id"]]
    unknown = await owner.get("/deals", params={"stage": "won"})
    body = assert_problem(unknown, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["query", "stage", 0]
    export = await owner.get("/deals/export", params={"stage": "won"})
    assert_problem(export, 422, "VALIDATION_ERROR")  # as the list, before any row is sent
    export = await owner.get("/deals/export", params={"stage": "intro", "format": "jsonl"})
    assert [json.loads(line)["id"] for line in export.text.splitlines()] == [mine["id"]]
    # A key of another pipeline than the one filtered on: unknown there.
    response = await owner.get(
        "/deals", params={"stage": "proposal", "pipeline_id": pipeline["id"]}
    )
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_backwards_is_a_lower_position_also_across_pipelines(team: Team) -> None:
    pipeline = await partners(team.owner)
    contact = await create_contact(team.member)
    deal = await create_deal(team.member, contact)
    await patch_deal(team.member, deal["id"], stage="negotiation")  # position 2
    # To another pipeline's position 1 (pilot), or its first stage (no stage given): back.
    for body in (
        {"pipeline_id": pipeline["id"], "stage": "pilot"},
        {"pipeline_id": pipeline["id"]},
    ):
        response = await team.member.patch(f"/deals/{deal['id']}", json=body)
        assert_problem(response, 403, "STAGE_ROLLBACK_FORBIDDEN")
    moved = await patch_deal(team.member, deal["id"], pipeline_id=pipeline["id"], stage="terms")
    assert (moved["pipeline_id"], moved["stage"]) == (pipeline["id"], "terms")
    assert_problem(
        await team.member.patch(f"/deals/{deal['id']}", json={"stage": "intro"}),
        403,
        "STAGE_ROLLBACK_FORBIDDEN",
    )
    # An admin may move it back, and to a pipeline's first stage by naming only the pipeline.
    default = await default_pipeline(team.owner)
    back = await patch_deal(team.admin, deal["id"], pipeline_id=default["id"])
    assert (back["pipeline_id"], back["stage"]) == (default["id"], "qualification")
    timeline = ok(await team.owner.get(f"/deals/{deal['id']}/activities"))["items"]
    assert timeline[0]["payload"] == {
        "old_stage": "terms",
        "new_stage": "qualification",
        "old_pipeline_id": pipeline["id"],
        "new_pipeline_id": default["id"],
    }


# --- stages --------------------------------------------------------------------------------


async def test_stages_are_added_renamed_and_reordered_keeping_positions_dense(
    owner: User,
) -> None:
    pipeline = await partners(owner)
    path = f"/pipelines/{pipeline['id']}/stages"

    def keys(body: dict[str, Any]) -> list[tuple[str, int]]:
        return [(s["key"], s["position"]) for s in body["stages"]]

    added = ok(
        await owner.post(
            path, json={"key": "demo", "name": "Demo", "probability": 30, "position": 1}
        ),
        201,
    )
    assert keys(added) == [("intro", 0), ("demo", 1), ("pilot", 2), ("terms", 3), ("signed", 4)]
    assert_problem(
        await owner.post(path, json={"key": "demo", "name": "Again", "probability": 1}),
        409,
        "STAGE_KEY_TAKEN",
    )
    moved = ok(await owner.patch(f"{path}/signed", json={"position": 0, "name": "Won"}))
    assert keys(moved) == [("signed", 0), ("intro", 1), ("demo", 2), ("pilot", 3), ("terms", 4)]
    assert moved["stages"][0]["name"] == "Won"
    last = ok(await owner.patch(f"{path}/signed", json={"position": 40}))
    assert keys(last)[-1] == ("signed", 4)
    assert_problem(await owner.patch(f"{path}/nope", json={"name": "X"}), 404, "STAGE_NOT_FOUND")


async def test_deleting_a_stage_moves_its_deals_with_their_timeline_and_events(
    owner: User, engine_: AsyncEngine
) -> None:
    pipeline = await partners(owner)
    path = f"/pipelines/{pipeline['id']}/stages"
    contact = await create_contact(owner)
    live = [
        await create_deal(owner, contact, amount="100", pipeline_id=pipeline["id"]),
        await create_deal(owner, contact, amount="50.5", pipeline_id=pipeline["id"]),
    ]
    trashed = await create_deal(owner, contact, amount="7", pipeline_id=pipeline["id"])
    assert (await owner.delete(f"/deals/{trashed['id']}")).status_code == 204
    for deal in (*live, trashed):
        assert deal["stage"] == "intro"
    start = ok(await owner.get("/events"))["next_cursor"]

    assert_problem(await owner.delete(f"{path}/intro"), 409, "STAGE_HAS_DEALS")
    for target in ("intro", "proposal", "nope"):
        response = await owner.delete(f"{path}/intro", params={"move_deals_to": target})
        assert_problem(response, 400, "STAGE_MOVE_TARGET_INVALID")

    after = ok(await owner.delete(f"{path}/intro", params={"move_deals_to": "pilot"}))
    assert [(s["key"], s["position"]) for s in after["stages"]] == [
        ("pilot", 0),
        ("terms", 1),
        ("signed", 2),
    ]
    for deal in live:
        assert (await read_deal(owner, deal["id"]))["stage"] == "pilot"
        timeline = ok(await owner.get(f"/deals/{deal['id']}/activities"))["items"]
        assert timeline[0]["payload"] == {"old_stage": "intro", "new_stage": "pilot"}
    events = ok(await owner.get("/events", params={"after": start}))["items"]
    updates = [e for e in events if e["type"] == "deal.updated"]
    assert sorted(e["data"]["object"]["id"] for e in updates) == sorted(d["id"] for d in live)
    assert all(e["data"]["changes"] == {"stage": ["intro", "pilot"]} for e in updates)
    assert [e["type"] for e in events if e["type"].startswith("pipeline.")] == ["pipeline.updated"]
    # The trashed deal moved too (silently) and comes back at the new stage.
    assert ok(await owner.post(f"/deals/{trashed['id']}/restore"))["stage"] == "pilot"
    await assert_totals_exact(engine_)
    funnel = ok(await owner.get(FUNNEL, params={"pipeline_id": pipeline["id"]}))
    assert [(s["stage"], s["count"]) for s in funnel["stages"]] == [
        ("pilot", 3),
        ("terms", 0),
        ("signed", 0),
    ]


async def test_the_last_stage_stays(owner: User) -> None:
    pipeline = ok(
        await owner.post(
            "/pipelines",
            json={"name": "One", "stages": [{"key": "only", "name": "Only", "probability": 0}]},
        ),
        201,
    )
    response = await owner.delete(f"/pipelines/{pipeline['id']}/stages/only")
    assert_problem(response, 409, "LAST_STAGE")


# --- analytics -----------------------------------------------------------------------------


async def test_analytics_per_pipeline_stay_exact_and_fresh_through_every_change(
    owner: User, engine_: AsyncEngine
) -> None:
    pipeline = await partners(owner)
    pid = pipeline["id"]
    contact = await create_contact(owner)
    await create_deal(owner, contact, amount="1000", pipeline_id=pid)  # intro 20 %
    pilot = await create_deal(owner, contact, amount="200.01", pipeline_id=pid)
    await patch_deal(owner, pilot["id"], stage="pilot", status="in_progress")  # 50 %
    won = await create_deal(owner, contact, amount="300", pipeline_id=pid)
    await patch_deal(owner, won["id"], stage="signed", status="won")
    await create_deal(owner, contact, amount="5")  # the default pipeline's

    summary = ok(await owner.get(SUMMARY, params={"pipeline_id": pid}))
    assert summary["total"] == {"count": 3, "total_amount": 1500.01}
    assert summary["weighted_pipeline_value"] == 300.01  # 1000 x 20 % + 200.01 x 50 %
    default = ok(await owner.get(SUMMARY))
    assert default["total"] == {"count": 1, "total_amount": 5.0}
    assert default["weighted_pipeline_value"] == 0.5
    funnel = ok(await owner.get(FUNNEL, params={"pipeline_id": pid}))
    assert [(s["stage"], s["count"], s["reached"]) for s in funnel["stages"]] == [
        ("intro", 1, 3),
        ("pilot", 1, 2),
        ("terms", 0, 1),
        ("signed", 1, 1),
    ]

    stages = f"/pipelines/{pid}/stages"
    ok(await owner.patch(f"{stages}/pilot", json={"probability": 100}))
    summary = ok(await owner.get(SUMMARY, params={"pipeline_id": pid}))
    assert summary["weighted_pipeline_value"] == 400.01  # seen at once, not a cached figure
    ok(await owner.patch(f"{stages}/signed", json={"position": 0}))
    funnel = ok(await owner.get(FUNNEL, params={"pipeline_id": pid}))
    assert [s["stage"] for s in funnel["stages"]] == ["signed", "intro", "pilot", "terms"]
    ok(await owner.patch(f"/pipelines/{pid}", json={"is_default": True}))
    assert ok(await owner.get(SUMMARY))["total"]["count"] == 3  # the default now
    await assert_totals_exact(engine_)


# --- events, imports, exports ------------------------------------------------------------


async def test_pipeline_changes_are_events(owner: User) -> None:
    start = ok(await owner.get("/events"))["next_cursor"]
    pipeline = await partners(owner)
    ok(await owner.patch(f"/pipelines/{pipeline['id']}", json={"name": "Partners"}))
    assert (await owner.delete(f"/pipelines/{pipeline['id']}")).status_code == 204
    events = ok(await owner.get("/events", params={"after": start, "types": "pipeline.*"}))
    assert [e["type"] for e in events["items"]] == [
        "pipeline.created",
        "pipeline.updated",
        "pipeline.deleted",
    ]
    assert events["items"][1]["data"]["changes"]["name"] == ["Partnerships", "Partners"]


async def test_imports_and_exports_carry_the_pipeline(api: Api, owner: User) -> None:
    pipeline = await partners(owner)
    default = await default_pipeline(owner)
    contact = await create_contact(owner)
    content = (
        "title,contact_id,pipeline_id,stage\n"
        f"In partners,{contact},{pipeline['id']},pilot\n"
        f"Default,{contact},,proposal\n"
        f"Wrong stage,{contact},{pipeline['id']},proposal\n"
        f"Unknown stage,{contact},,won\n"
    )
    queued = await owner.post(
        "/imports",
        files={"file": ("deals.csv", content.encode(), "text/csv")},
        data={"kind": "deals"},
    )
    assert queued.status_code == 202, queued.text
    await run_all(api)
    job = ok(await owner.get(f"/imports/{queued.json()['id']}"))
    assert (job["created"], job["failed"]) == (2, 2), job
    errors = ok(await owner.get(f"/imports/{queued.json()['id']}/errors"))["items"]
    assert [(e["row"], e["column"], e["code"]) for e in errors] == [
        (3, "stage", "STAGE_NOT_IN_PIPELINE"),
        (4, "stage", "VALIDATION_ERROR"),
    ]
    deals = ok(await owner.get("/deals", params={"order_by": "title", "order": "asc"}))["items"]
    assert [(d["title"], d["pipeline_id"], d["stage"]) for d in deals] == [
        ("Default", default["id"], "proposal"),
        ("In partners", pipeline["id"], "pilot"),
    ]
    export = await owner.get("/deals/export", params={"format": "jsonl"})
    assert export.status_code == 200
    lines = [json.loads(line) for line in export.text.splitlines()]
    exported = {line["title"]: line["pipeline_id"] for line in lines}
    assert exported == {"Default": default["id"], "In partners": pipeline["id"]}


async def test_a_stage_deleted_while_deals_move_to_it_leaves_none_behind(pg_api: Api) -> None:
    """On PostgreSQL, writers run at once: deals created at, or moved to, a stage while it is
    deleted either land before the deletion (and are moved with the others) or find it gone;
    none is left on the deleted stage, and the running totals stay exact."""
    owner = await pg_api.register(organization_name="Busy")
    pipeline = await partners(owner)
    pid = pipeline["id"]
    contact = await create_contact(owner)
    deals = [await create_deal(owner, contact, amount="10", pipeline_id=pid) for _ in range(12)]

    async def to_pilot(deal_id: int) -> int:
        response = await owner.patch(f"/deals/{deal_id}", json={"stage": "pilot"})
        return response.status_code

    async def new_at_pilot() -> int:
        response = await owner.post(
            "/deals", json={"contact_id": contact, "title": "N", "pipeline_id": pid}
        )
        if response.status_code != 201:
            return response.status_code
        return await to_pilot(response.json()["id"])

    async def delete_pilot() -> int:
        response = await owner.delete(
            f"/pipelines/{pid}/stages/pilot", params={"move_deals_to": "terms"}
        )
        return response.status_code

    results = await asyncio.gather(
        *(to_pilot(deal["id"]) for deal in deals[:6]),
        delete_pilot(),
        *(to_pilot(deal["id"]) for deal in deals[6:]),
        *(new_at_pilot() for _ in range(4)),
    )
    assert set(results) <= {200, 400, 409, 422}, results
    engine = pg_api.app.state.resources.engine
    async with engine.connect() as conn:
        left = await conn.scalar(
            text("SELECT count(*) FROM deals WHERE pipeline_id = :p AND stage = 'pilot'"),
            {"p": pid},
        )
    pilot_exists = any(
        s["key"] == "pilot" for s in ok(await owner.get(f"/pipelines/{pid}"))["stages"]
    )
    assert pilot_exists or left == 0
    await assert_totals_exact(engine)


# --- edges found in review -------------------------------------------------------------------


async def test_a_stage_no_deal_is_at_is_deleted_with_or_without_move_deals_to(
    owner: User,
) -> None:
    pipeline = await partners(owner)
    response = await owner.delete(
        f"/pipelines/{pipeline['id']}/stages/intro", params={"move_deals_to": "pilot"}
    )
    assert [stage["key"] for stage in ok(response)["stages"]] == ["pilot", "terms", "signed"]
    default = await default_pipeline(owner)
    response = await owner.delete(
        f"/pipelines/{default['id']}/stages/proposal", params={"move_deals_to": "closed"}
    )
    assert [stage["key"] for stage in ok(response)["stages"]] == [
        "qualification",
        "negotiation",
        "closed",
    ]


async def test_at_most_50_stages_and_a_strict_default_flag(owner: User) -> None:
    pipeline = ok(
        await owner.post(
            "/pipelines",
            json={
                "name": "Long",
                "stages": [{"key": f"s{n}", "name": f"S{n}", "probability": 0} for n in range(50)],
            },
        ),
        201,
    )
    response = await owner.post(
        f"/pipelines/{pipeline['id']}/stages",
        json={"key": "one_more", "name": "One more", "probability": 0},
    )
    assert_problem(response, 409, "STAGE_LIMIT_REACHED")
    response = await owner.patch(f"/pipelines/{pipeline['id']}", json={"is_default": 1})
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_an_unknown_stage_filter_is_refused_as_the_enum_refused_it(owner: User) -> None:
    for bad in ("won", "Won!"):  # a key of no pipeline; not a key at all
        response = await owner.get("/deals", params=[("stage", "proposal"), ("stage", bad)])
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert [(error["loc"], error["type"]) for error in body["errors"]] == [
            (["query", "stage", 1], "enum")
        ], bad
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact)
    for bad in ("won", "Won!", 7):
        response = await owner.patch(f"/deals/{deal['id']}", json={"stage": bad})
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert [(error["loc"], error["type"]) for error in body["errors"]] == [
            (["body", "stage"], "enum")
        ], bad


async def test_a_default_switch_waits_for_another_and_says_what_it_unset(pg_api: Api) -> None:
    """A switch of the default first locks its organization's row, as every switch does: one
    that starts while another is under way waits for it, then finds the other's new default
    as the one it unsets, and says so (`pipeline.updated`), so the feed never shows two."""
    owner = await pg_api.register(organization_name="Switches")
    first, second = await partners(owner), await partners(owner)
    former = await default_pipeline(owner)
    engine = pg_api.app.state.resources.engine
    async with engine.connect() as other:  # another switch, to `first`, as the app makes it
        await other.execute(
            text(
                "UPDATE organizations SET pipelines_version = pipelines_version + 1 WHERE id = :org"
            ),
            {"org": first["organization_id"]},
        )
        await other.execute(
            text("UPDATE pipelines SET is_default = false WHERE id = :id"), {"id": former["id"]}
        )
        await other.execute(
            text("UPDATE pipelines SET is_default = true WHERE id = :id"), {"id": first["id"]}
        )
        switch = asyncio.create_task(
            owner.patch(f"/pipelines/{second['id']}", json={"is_default": True})
        )
        await asyncio.sleep(0.3)
        assert not switch.done()  # waits for the other
        await other.commit()
    ok(await switch)
    events = ok(await owner.get("/events", params={"limit": 1000}))["items"]
    updated = [
        (event["data"]["object"]["id"], event["data"]["object"]["is_default"])
        for event in events
        if event["type"] == "pipeline.updated"
    ]
    assert sorted(updated) == sorted([(first["id"], False), (second["id"], True)])
    assert (await default_pipeline(owner))["id"] == second["id"]


async def test_a_default_switch_and_a_change_of_the_default_pipeline_at_once(
    pg_api: Api,
) -> None:
    """Every change of an organization's pipelines locks its row first, then the pipelines:
    a switch of the default (which locks two pipelines) and a stage added to the current
    default wait for each other, never deadlock."""
    owner = await pg_api.register(organization_name="Both")
    other = await partners(owner)
    for round_ in range(6):
        default = await default_pipeline(owner)
        target = other if default["id"] != other["id"] else await partners(owner)
        switch, added = await asyncio.gather(
            owner.patch(f"/pipelines/{target['id']}", json={"is_default": True}),
            owner.post(
                f"/pipelines/{default['id']}/stages",
                json={"key": f"extra_{round_}", "name": "Extra", "probability": 5},
            ),
        )
        assert (switch.status_code, added.status_code) == (200, 201), (switch.text, added.text)
        other = target


async def test_a_deal_created_while_its_first_stage_is_deleted_lands_on_the_next(
    pg_api: Api,
) -> None:
    """A new deal without `stage` goes to its pipeline's first stage; if that stage is being
    deleted meanwhile, the deal waits for the deletion and lands on the stage first after it."""
    owner = await pg_api.register(organization_name="Moving first")
    pipeline = await partners(owner)
    contact = await create_contact(owner)
    engine = pg_api.app.state.resources.engine
    async with engine.connect() as other:  # what deleting the stage `intro` does
        await other.execute(
            text(
                "SELECT id FROM pipeline_stages WHERE pipeline_id = :p AND key = 'intro' FOR UPDATE"
            ),
            {"p": pipeline["id"]},
        )
        await other.execute(
            text("DELETE FROM pipeline_stages WHERE pipeline_id = :p AND key = 'intro'"),
            {"p": pipeline["id"]},
        )
        created = asyncio.create_task(
            owner.post(
                "/deals",
                json={"contact_id": contact, "title": "New", "pipeline_id": pipeline["id"]},
            )
        )
        await asyncio.sleep(0.3)
        assert not created.done()  # waits for the deletion
        await other.commit()
    assert ok(await created, 201)["stage"] == "pilot"
