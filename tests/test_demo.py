"""`minicrm seed-demo`: a realistic, consistent, idempotent demo organization."""

from __future__ import annotations

import json
import subprocess
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.services.demo import DEMO_LOGINS, DEMO_PASSWORD, DemoResult, seed_demo
from tests.live_server import ROOT, server_env, sqlite_url
from tests.support import Api, run_minicrm, snapshot

STAGES = ["qualification", "proposal", "negotiation", "closed"]


async def run_seed(api: Api) -> DemoResult:
    from app.db.session import run_after_commit

    resources = api.app.state.resources
    async with resources.session_factory() as session:
        result = await seed_demo(session, resources)
        await session.commit()
        await run_after_commit(session)
    return result


async def rows(api: Api, sql: str, **params: Any) -> list[Any]:
    async with api.app.state.resources.engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@pytest.fixture
async def demo(api: Api) -> DemoResult:
    result = await run_seed(api)
    assert result.created
    return result


async def test_a_few_hundred_contacts_and_deals_spread_over_months(
    api: Api, demo: DemoResult
) -> None:
    org = demo.organization_id
    now = datetime.now(UTC)
    for table in ("contacts", "deals"):
        created = [
            as_utc(row[0])
            for row in await rows(
                api,
                f"SELECT created_at FROM {table} WHERE organization_id = :o",  # noqa: S608
                o=org,
            )
        ]
        assert 250 <= len(created) <= 1000, table
        assert max(created) <= now
        assert max(created) - min(created) >= timedelta(days=150), table
        assert len({moment.date() for moment in created}) >= 100, table
        # Not all created in the same second (or hour).
        assert len(set(created)) >= len(created) * 0.9, table
        recent = [moment for moment in created if now - moment <= timedelta(days=30)]
        assert len(recent) >= 20, table  # "last 30 days" in the summary shows something
    counts = {}
    for table in ("tasks", "activities"):
        sql = f"SELECT count(*) FROM {table} WHERE organization_id = :o"  # noqa: S608
        counts[table] = (await rows(api, sql, o=org))[0][0]
    tasks, activities = counts["tasks"], counts["activities"]
    assert tasks >= 200
    assert activities >= 1000
    assert demo.counts["deals"] == len(
        await rows(api, "SELECT id FROM deals WHERE organization_id = :o", o=org)
    )


async def test_deals_follow_the_rules_and_their_timelines_lead_to_them(
    api: Api, demo: DemoResult
) -> None:
    org = demo.organization_id
    deals = {
        deal_id: (status, stage, Decimal(str(amount)), currency, as_utc(created), as_utc(updated))
        for deal_id, status, stage, amount, currency, created, updated in await rows(
            api,
            "SELECT id, status, stage, amount, currency, created_at, updated_at FROM deals "
            "WHERE organization_id = :o",
            o=org,
        )
    }
    combos = Counter((status, stage) for status, stage, *_ in deals.values())
    assert set(combos) <= {
        ("new", "qualification"),
        ("in_progress", "qualification"),
        ("in_progress", "proposal"),
        ("in_progress", "negotiation"),
        ("won", "closed"),
        ("lost", "closed"),
    }, combos
    assert len(combos) == 6, combos  # every one of them is there to look at
    assert all(amount > 0 for status, _, amount, *_ in deals.values() if status == "won")
    currencies = Counter(currency for _, _, _, currency, *_ in deals.values())
    assert currencies.most_common(1)[0][1] >= 0.9 * len(deals), currencies

    timeline: defaultdict[int, list[tuple[datetime, int, str, dict[str, Any]]]] = defaultdict(list)

    for deal_id, kind, payload, created, activity_id in await rows(
        api,
        "SELECT deal_id, type, payload, created_at, id FROM activities WHERE organization_id = :o",
        o=org,
    ):
        data = payload if isinstance(payload, dict) else json.loads(payload)
        timeline[deal_id].append((as_utc(created), activity_id, kind, data))
    now = datetime.now(UTC)
    comments = []
    for deal_id, (status, stage, _, _, created, updated) in deals.items():
        events = sorted(timeline[deal_id])
        assert all(created <= moment <= now for moment, *_ in events), deal_id
        assert created <= updated <= now
        current = ("new", "qualification")
        for _, _, kind, data in events:
            if kind == "status_changed":
                assert data["old_status"] == current[0], (deal_id, events)
                current = (data["new_status"], current[1])
            elif kind == "stage_changed":
                assert data["old_stage"] == current[1], (deal_id, events)
                # Forward, one step at a time (a lost deal goes straight to closed).
                assert STAGES.index(data["new_stage"]) > STAGES.index(current[1])
                current = (current[0], data["new_stage"])
            elif kind == "comment":
                comments.append(data["text"])
        assert current == (status, stage), (deal_id, events)
    assert len(set(comments)) >= 20
    # Moves happen over weeks, not in the second the deal was created.
    moves = [
        moment - deals[deal_id][4]
        for deal_id, events in timeline.items()
        for moment, _, kind, _ in events
        if kind in ("status_changed", "stage_changed")
    ]
    assert sum(1 for gap in moves if gap >= timedelta(days=1)) >= 0.8 * len(moves)


async def test_tasks_have_varied_texts_and_due_dates(api: Api, demo: DemoResult) -> None:
    tasks = await rows(
        api,
        "SELECT t.title, t.due_date, t.is_done, d.status FROM tasks t "
        "JOIN deals d ON d.id = t.deal_id WHERE t.organization_id = :o",
        o=demo.organization_id,
    )
    today = datetime.now(UTC).date()
    assert len({title for title, *_ in tasks}) >= 50
    due = [d if not isinstance(d, str) else datetime.fromisoformat(d).date() for _, d, *_ in tasks]
    assert len({d for d in due if d is not None}) >= 40
    open_due = [d for d, (_, _, done, _) in zip(due, tasks, strict=True) if not done and d]
    assert any(d < today for d in open_due), "no overdue task"
    assert any(d > today for d in open_due), "no task due later"
    # Tasks of closed deals are done.
    assert all(done for _, _, done, status in tasks if status in ("won", "lost"))


async def test_running_totals_equal_a_fresh_group_by(api: Api, demo: DemoResult) -> None:
    totals = await rows(
        api,
        "SELECT currency, status, stage, sum(deal_count), sum(amount_sum) FROM deal_stats "
        "WHERE organization_id = :o GROUP BY 1, 2, 3 HAVING sum(deal_count) <> 0 ORDER BY 1, 2, 3",
        o=demo.organization_id,
    )
    fresh = await rows(
        api,
        "SELECT currency, status, stage, count(*), sum(amount) FROM deals "
        "WHERE organization_id = :o GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        o=demo.organization_id,
    )
    assert [tuple(row) for row in totals] == [tuple(row) for row in fresh]
    assert len(fresh) >= 6


async def test_contacts_and_deals_belong_to_the_companies_they_name(
    api: Api, demo: DemoResult
) -> None:
    org = demo.organization_id
    companies = dict(
        await rows(api, "SELECT id, name FROM companies WHERE organization_id = :o", o=org)
    )
    assert 10 <= len(companies) == demo.counts["companies"]
    deals = await rows(api, "SELECT title, company_id FROM deals WHERE organization_id = :o", o=org)
    assert all(title.endswith(f" for {companies[company_id]}") for title, company_id in deals)
    unlinked = await rows(
        api,
        "SELECT count(*) FROM contacts WHERE organization_id = :o AND company_id IS NULL",
        o=org,
    )
    assert unlinked[0][0] == 0
    login = await api.client.post(
        api.url("/auth/login"), json={"email": DEMO_LOGINS[0][0], "password": DEMO_PASSWORD}
    )
    headers = {
        "Authorization": f"Bearer {login.json()['access_token']}",
        "X-Organization-Id": str(org),
    }
    listed = await api.client.get(api.url("/companies"), params={"search": "GMBH"}, headers=headers)
    [nordwind] = listed.json()["items"]
    assert nordwind["name"] == "Nordwind GmbH"
    assert nordwind["contacts_count"] > 0
    assert nordwind["open_deals_count"] > 0


async def test_custom_fields_are_defined_and_filled(api: Api, demo: DemoResult) -> None:
    login = await api.client.post(
        api.url("/auth/login"), json={"email": DEMO_LOGINS[3][0], "password": DEMO_PASSWORD}
    )
    headers = {
        "Authorization": f"Bearer {login.json()['access_token']}",
        "X-Organization-Id": str(demo.organization_id),
    }
    fields = (await api.client.get(api.url("/custom-fields"), headers=headers)).json()
    assert {(f["entity"], f["key"], f["type"]) for f in fields} == {
        ("deal", "source", "select"),
        ("contact", "linkedin", "text"),
        ("company", "employees", "number"),
    }
    totals = [
        (
            await api.client.get(api.url("/deals"), params={"cf.source": option}, headers=headers)
        ).json()["total"]
        for option in next(f for f in fields if f["key"] == "source")["options"]
    ]
    assert all(total > 0 for total in totals)
    assert sum(totals) == demo.counts["deals"]
    big = await api.client.get(
        api.url("/companies"),
        params={"cf.employees.min": 1000, "order_by": "cf.employees"},
        headers=headers,
    )
    sizes = [c["custom_fields"]["employees"] for c in big.json()["items"]]
    assert sizes
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes) >= 1000
    linked = await api.client.get(api.url("/contacts"), headers=headers)
    assert any("linkedin" in c["custom_fields"] for c in linked.json()["items"])


async def test_a_second_run_changes_nothing(api: Api, demo: DemoResult) -> None:
    before = await snapshot(api.app.state.resources.engine)
    again = await run_seed(api)
    assert not again.created
    assert again.organization_id == demo.organization_id
    assert await snapshot(api.app.state.resources.engine) == before


async def test_the_four_logins_work_with_their_roles(api: Api, demo: DemoResult) -> None:
    # The summary is the default pipeline's (section 17): the demo has a second one.
    deals_in_eur = (
        await rows(
            api,
            "SELECT count(*) FROM deals d JOIN pipelines p ON p.id = d.pipeline_id "
            "WHERE d.organization_id = :o AND d.currency = 'EUR' AND p.is_default",
            o=demo.organization_id,
        )
    )[0][0]
    for email, _, role in DEMO_LOGINS:
        login = await api.client.post(
            api.url("/auth/login"), json={"email": email, "password": DEMO_PASSWORD}
        )
        assert login.status_code == 200, (email, login.text)
        headers = {
            "Authorization": f"Bearer {login.json()['access_token']}",
            "X-Organization-Id": str(demo.organization_id),
        }
        mine = await api.client.get(api.url("/organizations/me"), headers=headers)
        demo_org = [o for o in mine.json() if o["id"] == demo.organization_id]
        assert len(demo_org) == 1, mine.json()
        assert demo_org[0]["role"] == role.value, (email, mine.json())
        summary = await api.client.get(
            api.url("/analytics/deals/summary"), params={"currency": "EUR"}, headers=headers
        )
        assert summary.status_code == 200, summary.text
        by_status = summary.json()["by_status"]
        assert sum(item["count"] for item in by_status.values()) == deals_in_eur
        search = await api.client.get(
            api.url("/contacts"), params={"search": "иван"}, headers=headers
        )
        assert search.json()["total"] >= 1


def test_the_command_prints_the_four_logins_and_is_idempotent(tmp_path: Path) -> None:
    env = {**server_env(sqlite_url(tmp_path)), "PYTHONPATH": str(ROOT)}

    def minicrm(*args: str) -> subprocess.CompletedProcess[str]:
        return run_minicrm(env, *args, cwd=tmp_path, timeout=300)

    assert minicrm("migrate").returncode == 0
    first = minicrm("seed-demo")
    assert first.returncode == 0, first.stderr
    for email, _, role in DEMO_LOGINS:
        assert f"login: {email} / {DEMO_PASSWORD} ({role.value})" in first.stdout
    assert "deals" in first.stderr
    again = minicrm("seed-demo")
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stderr
    assert again.stdout == first.stdout
