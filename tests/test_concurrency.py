"""Concurrency: parallel requests on one app instance, on SQLite and on PostgreSQL.

- 20 parallel PATCHes of one deal (status and stage, alternating) all succeed, lose no update
  and leave exactly one timeline activity per real change;
- 10 parallel registrations of one email (in different letter case) create one account;
- deleting a contact while deals are being created for it never leaves a deal pointing at a
  deleted contact, and never answers 5xx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Activity, DealStat
from tests.support import PASSWORD, Api, User, count_live, count_rows, engine_of

STATUSES = ("in_progress", "won", "lost", "new")
STAGES = ("proposal", "negotiation", "closed", "qualification")


@pytest.fixture(params=["sqlite", "postgresql"])
async def race_api(
    request: pytest.FixtureRequest, make_api: Callable[..., Awaitable[Api]], sqlite_url: str
) -> Api:
    if request.param == "sqlite":
        return await make_api(sqlite_url)
    pg_url: str = request.getfixturevalue("pg_url")  # skips (or fails) without PostgreSQL
    return await make_api(pg_url)


async def created(response: Awaitable[httpx.Response]) -> dict[str, Any]:
    result = await response
    assert result.status_code == 201, result.text
    body: dict[str, Any] = result.json()
    return body


# --- one deal, 20 writers -----------------------------------------------------------------


async def timeline(engine: AsyncEngine, deal_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The deal's activities, oldest first (ids only grow)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Activity.type, Activity.payload)
            .where(Activity.deal_id == deal_id)
            .order_by(Activity.id)
        )
        return [(str(kind), dict(payload)) for kind, payload in rows]


def replay(
    activities: list[tuple[str, dict[str, Any]]], status: str, stage: str
) -> list[tuple[str, str]]:
    """The deal's (status, stage) after each activity, checking that every activity starts
    from where the previous one left off: a lost update or a missing activity breaks it."""
    states = [(status, stage)]
    for kind, payload in activities:
        if kind == "status_changed":
            assert payload["old_status"] == status, (payload, activities)
            assert payload["new_status"] != status, ("a no-op was recorded", activities)
            status = payload["new_status"]
        elif kind == "stage_changed":
            assert payload["old_stage"] == stage, (payload, activities)
            assert payload["new_stage"] != stage, ("a no-op was recorded", activities)
            stage = payload["new_stage"]
        else:
            continue
        states.append((status, stage))
    return states


async def test_parallel_patches_of_one_deal_lose_nothing(race_api: Api) -> None:
    api = race_api
    owner = await api.register(organization_name="Race")
    admin = await api.member_of(owner, "admin")  # owner and admin may also move stages back
    contact = await created(owner.post("/contacts", json={"name": "Ann"}))
    deal = await created(
        owner.post("/deals", json={"contact_id": contact["id"], "title": "Hot", "amount": "100"})
    )
    deal_id = deal["id"]

    patches: list[tuple[User, dict[str, str]]] = []
    for i in range(20):
        field, values = ("status", STATUSES) if i % 2 == 0 else ("stage", STAGES)
        patches.append((owner if i % 4 < 2 else admin, {field: values[(i // 2) % 4]}))
    responses = await asyncio.gather(
        *(user.patch(f"/deals/{deal_id}", json=body) for user, body in patches)
    )

    for (_, body), response in zip(patches, responses, strict=True):
        assert response.status_code == 200, response.text
        for field, value in body.items():
            assert response.json()[field] == value, (body, response.json())

    final = (await owner.get(f"/deals/{deal_id}")).json()
    activities = await timeline(engine_of(api), deal_id)
    assert all(kind in ("status_changed", "stage_changed") for kind, _ in activities)
    states = replay(activities, "new", "qualification")
    # The last activity's new values are the deal's final state: the last applied change won.
    assert states[-1] == (final["status"], final["stage"])
    # Every response saw a state that really existed on the timeline (no update overwritten).
    for response in responses:
        state = (response.json()["status"], response.json()["stage"])
        assert state in states, (state, states)
    # Each real change is on the timeline once; at most one per PATCH of that field.
    status_changes = sum(kind == "status_changed" for kind, _ in activities)
    stage_changes = sum(kind == "stage_changed" for kind, _ in activities)
    assert 1 <= status_changes <= 10
    assert 1 <= stage_changes <= 10
    api_timeline = (await owner.get(f"/deals/{deal_id}/activities?page_size=100")).json()
    assert api_timeline["total"] == len(activities)

    # The running totals behind analytics followed every move: one deal, at its final place.
    async with engine_of(api).connect() as conn:
        stats = (
            await conn.execute(
                select(DealStat.status, DealStat.stage, DealStat.deal_count).where(
                    DealStat.deal_count != 0
                )
            )
        ).all()
    assert [(str(a), str(b), int(c)) for a, b, c in stats] == [(final["status"], final["stage"], 1)]
    summary = (await owner.get("/analytics/deals/summary")).json()
    assert summary["by_status"][final["status"]]["count"] == 1
    assert summary["total"] == {"count": 1, "total_amount": 100}


# --- one email, 10 registrations ------------------------------------------------------------


async def test_parallel_registrations_of_one_email_create_one_account(race_api: Api) -> None:
    api = race_api
    variants = [
        "race@example.com",
        "Race@example.com",
        "RACE@EXAMPLE.COM",
        "race@Example.com",
        "rAce@example.com",
        "raCe@example.COM",
        "racE@EXAMPLE.com",
        "Race@Example.Com",
        "RACE@example.com",
        "race@EXAMPLE.COM",
    ]
    responses = await asyncio.gather(
        *(
            api.client.post(
                api.url("/auth/register"),
                json={
                    "email": email,
                    "password": PASSWORD,
                    "name": f"Racer {i}",
                    "organization_name": f"Org {i}",
                },
            )
            for i, email in enumerate(variants)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "EMAIL_TAKEN"
            assert response.headers["content-type"].startswith("application/problem+json")

    engine = engine_of(api)
    assert await count_rows(engine, "users", "lower(email) = :e", e="race@example.com") == 1
    assert await count_rows(engine, "users") == 1
    # The losers' organizations and memberships were rolled back with them.
    assert await count_rows(engine, "organizations") == 1
    assert await count_rows(engine, "memberships") == 1
    assert await count_rows(engine, "auth_sessions") == 1
    login = await api.client.post(
        api.url("/auth/login"), json={"email": "RaCe@eXaMpLe.CoM", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text


# --- deleting a contact while deals are created for it --------------------------------------


async def test_deleting_a_contact_while_deals_are_created_for_it(race_api: Api) -> None:
    api = race_api
    owner = await api.register(organization_name="Race")
    manager = await api.member_of(owner, "manager")
    contacts = [
        (await created(owner.post("/contacts", json={"name": f"Contact {i}"})))["id"]
        for i in range(8)
    ]

    calls: list[tuple[str, int, Awaitable[httpx.Response]]] = []
    for i, contact_id in enumerate(contacts):
        delete = ("delete", contact_id, owner.delete(f"/contacts/{contact_id}"))
        creates = [
            (
                "create",
                contact_id,
                user.post("/deals", json={"contact_id": contact_id, "title": "Racing"}),
            )
            for user in (owner, manager)
        ]
        # Vary who is first in line: the delete, or a create.
        calls.extend([delete, *creates] if i % 2 == 0 else [*creates, delete])
    responses = await asyncio.gather(*(call for _, _, call in calls))

    outcome: dict[int, dict[str, list[int]]] = {c: {"delete": [], "create": []} for c in contacts}
    for (kind, contact_id, _), response in zip(calls, responses, strict=True):
        assert response.status_code < 500, response.text
        if kind == "delete":
            assert response.status_code in (204, 409), response.text
            if response.status_code == 409:
                assert response.json()["code"] == "CONTACT_HAS_DEALS"
        else:
            assert response.status_code in (201, 400), response.text
            if response.status_code == 400:
                assert response.json()["code"] == "CONTACT_NOT_FOUND"
        outcome[contact_id][kind].append(response.status_code)

    engine = engine_of(api)
    for contact_id, result in outcome.items():
        exists = await count_live(engine, "contacts", "id = :id", id=contact_id)
        deals = await count_live(engine, "deals", "contact_id = :id", id=contact_id)
        if result["delete"] == [204]:
            assert result["create"] == [400, 400], result
            assert (exists, deals) == (0, 0)
        else:
            assert 201 in result["create"], result
            assert exists == 1
            assert deals == result["create"].count(201)

    async with engine.connect() as conn:
        orphans = await conn.scalar(
            text(
                "SELECT count(*) FROM deals d LEFT JOIN contacts c"
                " ON c.id = d.contact_id AND c.organization_id = d.organization_id"
                " AND c.deleted_at IS NULL"
                " WHERE c.id IS NULL AND d.deleted_at IS NULL"
            )
        )
        deal_total = await conn.scalar(select(func.count()).select_from(text("deals")))
        counted = await conn.scalar(select(func.coalesce(func.sum(DealStat.deal_count), 0)))
    assert orphans == 0
    created_deals = sum(r["create"].count(201) for r in outcome.values())
    assert deal_total == created_deals
    assert counted == deal_total  # the analytics totals saw exactly the deals that exist
