"""The end-to-end scenario of the contract (section 10), through the real endpoints only:

register -> a second organization -> add a member (registered separately) -> the member creates
a contact and a deal -> status and stage changes (the member forward, the owner backward) ->
a task -> the deal's timeline -> analytics (summary and funnel) of that organization.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.support import Api, assert_problem

STATUSES = ("new", "in_progress", "won", "lost")
STAGES = ("qualification", "proposal", "negotiation", "closed")


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def summary_of(
    by_status: dict[str, tuple[int, float]], new_deals: int, days: int = 30, weighted: float = 0
) -> dict[str, Any]:
    counts = {s: by_status.get(s, (0, 0))[0] for s in STATUSES}
    amounts = {s: by_status.get(s, (0, 0))[1] for s in STATUSES}
    won_count, won_amount = by_status.get("won", (0, 0))
    return {
        "by_status": {s: {"count": counts[s], "total_amount": amounts[s]} for s in STATUSES},
        "total": {"count": sum(counts.values()), "total_amount": sum(amounts.values())},
        "avg_won_amount": round(won_amount / won_count, 2) if won_count else 0,
        # section 17: the open deals' amounts weighed by their stage (qualification 10 %)
        "weighted_pipeline_value": weighted,
        "new_deals_last_n_days": new_deals,
        "days": days,
    }


def funnel_of(deals: list[tuple[str, str]]) -> dict[str, Any]:
    """The expected funnel for deals given as (stage, status), computed independently."""
    stages = []
    previous_reached: int | None = None
    for index, stage in enumerate(STAGES):
        at_stage = [status for deal_stage, status in deals if deal_stage == stage]
        reached = sum(1 for deal_stage, _ in deals if STAGES.index(deal_stage) >= index)
        stages.append(
            {
                "stage": stage,
                "count": len(at_stage),
                "by_status": {s: at_stage.count(s) for s in STATUSES},
                "reached": reached,
                "conversion_from_prev": (
                    round(reached / previous_reached * 100, 2) if previous_reached else None
                ),
            }
        )
        previous_reached = reached
    return {"stages": stages}


async def test_full_flow(api: Api) -> None:
    # 1. register: a user with their own first organization
    founder = await api.register(email="founder@example.com", organization_name="Acme")
    me = ok(await api.client.get(api.url("/auth/me"), headers=founder.headers()))
    assert [(o["name"], o["role"]) for o in me["organizations"]] == [("Acme", "owner")]

    # 2. a second organization; the founder owns it
    sales = ok(await founder.post("/organizations", json={"name": "Acme Sales"}), 201)
    assert (sales["name"], sales["role"]) == ("Acme Sales", "owner")
    owner = replace(founder, organization_id=sales["id"])

    # 3. a member, registered separately, is added to the second organization
    registered = await api.register(email="mia@example.com", organization_name="Mia's own")
    added = await owner.post(
        f"/organizations/{sales['id']}/members", json={"email": "MIA@example.com", "role": "member"}
    )
    assert added.status_code == 201, added.text
    member = replace(registered, organization_id=sales["id"])
    members = ok(await member.get(f"/organizations/{sales['id']}/members"))
    assert {(m["user_id"], m["role"]) for m in members} == {
        (owner.id, "owner"),
        (member.id, "member"),
    }

    # 4. the member creates a contact and a deal: both are the member's
    contact = ok(
        await member.post("/contacts", json={"name": "Иван Петров", "email": "ivan@example.ru"}),
        201,
    )
    assert (contact["organization_id"], contact["owner_id"]) == (sales["id"], member.id)
    deal = ok(
        await member.post(
            "/deals",
            json={
                "contact_id": contact["id"],
                "title": "Licences",
                "amount": "1500.50",
                "currency": "eur",
            },
        ),
        201,
    )
    assert {k: deal[k] for k in ("organization_id", "contact_id", "owner_id")} == {
        "organization_id": sales["id"],
        "contact_id": contact["id"],
        "owner_id": member.id,
    }
    assert (deal["amount"], deal["currency"], deal["status"], deal["stage"]) == (
        1500.5,
        "EUR",
        "new",
        "qualification",
    )
    path = f"/deals/{deal['id']}"

    # 5. status and stage changes: the member moves forward (skipping a stage), may not move
    #    back; the owner may
    ok(await member.patch(path, json={"status": "in_progress"}))
    ok(await member.patch(path, json={"stage": "negotiation"}))
    refused = await member.patch(path, json={"stage": "proposal"})
    assert_problem(refused, 403, "STAGE_ROLLBACK_FORBIDDEN")
    assert ok(await member.get(path))["stage"] == "negotiation"
    ok(await owner.patch(path, json={"stage": "proposal"}))
    ok(await member.patch(path, json={"stage": "proposal", "title": "Licences 2025"}))  # no-op
    won = ok(await member.patch(path, json={"status": "won", "stage": "closed"}))
    assert (won["status"], won["stage"], won["title"]) == ("won", "closed", "Licences 2025")

    # 6. a task on the deal (the member's own deal); today is a valid due date
    today = datetime.now(UTC).date().isoformat()
    task = ok(
        await member.post(
            "/tasks", json={"deal_id": deal["id"], "title": "Send invoice", "due_date": today}
        ),
        201,
    )
    assert (task["deal_id"], task["due_date"], task["is_done"]) == (deal["id"], today, False)
    listed = ok(await owner.get("/tasks", params={"deal_id": deal["id"], "only_open": "true"}))
    assert [t["id"] for t in listed["items"]] == [task["id"]]

    # a comment by the owner
    ok(
        await owner.post(
            f"{path}/activities", json={"type": "comment", "payload": {"text": "Well done!"}}
        ),
        201,
    )

    # 7. the timeline: every change, newest first, with its author
    timeline = ok(await member.get(f"{path}/activities"))
    assert timeline["total"] == 7
    assert [(a["type"], a["author_id"], a["payload"]) for a in timeline["items"]] == [
        ("comment", owner.id, {"text": "Well done!"}),
        ("task_created", member.id, {"task_id": task["id"], "task_title": "Send invoice"}),
        ("stage_changed", member.id, {"old_stage": "proposal", "new_stage": "closed"}),
        ("status_changed", member.id, {"old_status": "in_progress", "new_status": "won"}),
        ("stage_changed", owner.id, {"old_stage": "negotiation", "new_stage": "proposal"}),
        ("stage_changed", member.id, {"old_stage": "qualification", "new_stage": "negotiation"}),
        ("status_changed", member.id, {"old_status": "new", "new_status": "in_progress"}),
    ]
    assert {a["deal_id"] for a in timeline["items"]} == {deal["id"]}

    # two more deals, so the analytics have something to tell apart
    small = ok(
        await owner.post(
            "/deals", json={"contact_id": contact["id"], "title": "Support", "amount": 200}
        ),
        201,
    )
    lost = ok(
        await member.post(
            "/deals",
            json={
                "contact_id": contact["id"],
                "title": "Training",
                "amount": "300",
                "currency": "EUR",
            },
        ),
        201,
    )
    ok(await member.patch(f"/deals/{lost['id']}", json={"status": "lost", "stage": "proposal"}))
    # and one in the founder's first organization, which must not count for "Acme Sales"
    acme_contact = ok(await founder.post("/contacts", json={"name": "Elsewhere"}), 201)
    ok(
        await founder.post(
            "/deals", json={"contact_id": acme_contact["id"], "title": "Other", "amount": 999}
        ),
        201,
    )
    assert small["currency"] == "USD"

    # 8. analytics of the second organization
    summary = ok(await member.get("/analytics/deals/summary"))
    assert summary == summary_of(
        {"new": (1, 200), "won": (1, 1500.5), "lost": (1, 300)}, new_deals=3, weighted=20
    )
    assert summary["total"] == {"count": 3, "total_amount": 2000.5}
    assert summary["avg_won_amount"] == 1500.5

    in_eur = ok(await owner.get("/analytics/deals/summary", params={"currency": "eur", "days": 7}))
    assert in_eur == summary_of({"won": (1, 1500.5), "lost": (1, 300)}, new_deals=2, days=7)

    funnel = ok(await member.get("/analytics/deals/funnel"))
    assert funnel == funnel_of([("closed", "won"), ("qualification", "new"), ("proposal", "lost")])
    assert [(s["stage"], s["reached"], s["conversion_from_prev"]) for s in funnel["stages"]] == [
        ("qualification", 3, None),
        ("proposal", 2, 66.67),
        ("negotiation", 1, 50.0),
        ("closed", 1, 100.0),
    ]
    funnel_eur = ok(await member.get("/analytics/deals/funnel", params={"currency": "EUR"}))
    assert funnel_eur == funnel_of([("closed", "won"), ("proposal", "lost")])

    # the first organization sees only its own deal
    acme_summary = ok(await founder.get("/analytics/deals/summary"))
    assert acme_summary == summary_of({"new": (1, 999)}, new_deals=1, weighted=99.9)

    # a write is visible at once (never a stale cached answer)
    ok(await owner.patch(f"/deals/{small['id']}", json={"status": "in_progress"}))
    after = ok(await member.get("/analytics/deals/summary"))
    assert after == summary_of(
        {"in_progress": (1, 200), "won": (1, 1500.5), "lost": (1, 300)}, new_deals=3, weighted=20
    )
    ok(await owner.patch(f"/deals/{small['id']}", json={"stage": "negotiation"}))
    assert ok(await member.get("/analytics/deals/funnel")) == funnel_of(
        [("closed", "won"), ("negotiation", "in_progress"), ("proposal", "lost")]
    )

    # finally the deal as everyone sees it, and the open task closed by the member
    final = ok(await owner.get(path))
    assert (final["status"], final["stage"], final["amount"]) == ("won", "closed", 1500.5)
    done = ok(await member.patch(f"/tasks/{task['id']}", json={"is_done": True}))
    assert done["is_done"] is True
    assert ok(await owner.get("/tasks", params={"only_open": "true"}))["total"] == 0
