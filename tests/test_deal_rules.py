"""The deal pipeline's rules, per role, and the automatic timeline they write."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    Api,
    User,
    assert_problem,
    count_live,
    count_rows,
    count_trashed,
    create_contact,
    create_deal,
    patch_deal,
    read_deal,
)

ROLES = ("owner", "admin", "manager", "member")
MANAGING_ROLES = ("owner", "admin", "manager")
# `actor` names who made the entry: the author, or the API key that acted for them.
ACTIVITY_KEYS = {"id", "deal_id", "author_id", "actor", "type", "payload", "created_at"}
STATUSES = ("new", "in_progress", "won", "lost")
STAGES = ("qualification", "proposal", "negotiation", "closed")


@dataclass
class Team:
    owner: User
    admin: User
    manager: User
    member: User
    contact_id: int

    def by_role(self, role: str) -> User:
        user: User = getattr(self, role)
        return user


@pytest.fixture
async def team(api: Api, owner: User) -> Team:
    return Team(
        owner=owner,
        admin=await api.member_of(owner, "admin"),
        manager=await api.member_of(owner, "manager"),
        member=await api.member_of(owner, "member"),
        contact_id=await create_contact(owner),
    )


async def timeline(user: User, deal_id: int) -> list[tuple[str, dict[str, Any], int | None]]:
    """The deal's activities, oldest first, as (type, payload, author_id)."""
    response = await user.get(f"/deals/{deal_id}/activities", params={"page_size": 100})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    for item in items:
        assert set(item) == ACTIVITY_KEYS
        assert item["deal_id"] == deal_id
        assert item["actor"] == {"type": "user", "id": item["author_id"]}
    return [(a["type"], a["payload"], a["author_id"]) for a in reversed(items)]


def status_changed(old: str, new: str, author: User) -> tuple[str, dict[str, Any], int]:
    return ("status_changed", {"old_status": old, "new_status": new}, author.id)


def stage_changed(old: str, new: str, author: User) -> tuple[str, dict[str, Any], int]:
    return ("stage_changed", {"old_stage": old, "new_stage": new}, author.id)


async def activity_count(engine: AsyncEngine, deal_id: int) -> int:
    return await count_rows(engine, "activities", "deal_id = :id", id=deal_id)


async def assert_refused_without_trace(
    engine: AsyncEngine, reader: User, before: dict[str, Any], activities_before: int
) -> None:
    assert await read_deal(reader, before["id"]) == before
    assert await activity_count(engine, before["id"]) == activities_before


# --- won needs an amount ------------------------------------------------------------------


async def test_won_requires_a_positive_amount_for_every_role(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for role in ROLES:
        with subtests.test(role):
            actor = team.by_role(role)
            deal = await create_deal(actor, team.contact_id)
            path = f"/deals/{deal['id']}"

            for body in ({"status": "won"}, {"status": "won", "amount": "0.00"}):
                response = await actor.patch(path, json=body)
                assert_problem(response, 400, "DEAL_WON_REQUIRES_AMOUNT")
                await assert_refused_without_trace(engine, team.owner, deal, 0)

            won = await patch_deal(actor, deal["id"], status="won", amount="10.00")
            assert (won["status"], won["amount"]) == ("won", 10)
            assert await timeline(team.owner, deal["id"]) == [status_changed("new", "won", actor)]

            # A won deal cannot lose its amount...
            response = await actor.patch(path, json={"amount": 0})
            assert_problem(response, 400, "DEAL_WON_REQUIRES_AMOUNT")
            await assert_refused_without_trace(engine, team.owner, won, 1)

            # ...but the rule looks at the result: leaving `won` at the same time is fine.
            lost = await patch_deal(actor, deal["id"], status="lost", amount=0)
            assert (lost["status"], lost["amount"]) == ("lost", 0)
            assert await timeline(team.owner, deal["id"]) == [
                status_changed("new", "won", actor),
                status_changed("won", "lost", actor),
            ]


# --- stages -------------------------------------------------------------------------------


async def test_stage_rollback_only_by_owner_and_admin(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for role in ROLES:
        with subtests.test(role):
            actor = team.by_role(role)
            deal = await create_deal(actor, team.contact_id)
            # Skipping forward is allowed for everyone.
            deal = await patch_deal(actor, deal["id"], stage="negotiation")
            assert deal["stage"] == "negotiation"
            forward = [stage_changed("qualification", "negotiation", actor)]
            assert await timeline(team.owner, deal["id"]) == forward

            response = await actor.patch(f"/deals/{deal['id']}", json={"stage": "proposal"})

            if role in ("owner", "admin"):
                assert response.status_code == 200, response.text
                assert response.json()["stage"] == "proposal"
                assert await timeline(team.owner, deal["id"]) == [
                    *forward,
                    stage_changed("negotiation", "proposal", actor),
                ]
            else:
                assert_problem(response, 403, "STAGE_ROLLBACK_FORBIDDEN")
                await assert_refused_without_trace(engine, team.owner, deal, 1)
                # Nothing else in the same request is applied either.
                response = await actor.patch(
                    f"/deals/{deal['id']}",
                    json={"title": "Sneaky", "status": "in_progress", "stage": "qualification"},
                )
                assert_problem(response, 403, "STAGE_ROLLBACK_FORBIDDEN")
                await assert_refused_without_trace(engine, team.owner, deal, 1)


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_owner_and_admin_roll_back_anyones_deal(team: Team, role: str) -> None:
    deal = await create_deal(team.member, team.contact_id)
    await patch_deal(team.member, deal["id"], stage="closed")

    rolled = await patch_deal(team.by_role(role), deal["id"], stage="qualification")

    assert rolled["stage"] == "qualification"
    assert await timeline(team.owner, deal["id"]) == [
        stage_changed("qualification", "closed", team.member),
        stage_changed("closed", "qualification", team.by_role(role)),
    ]


async def test_manager_cannot_roll_back_a_members_deal(team: Team, engine: AsyncEngine) -> None:
    deal = await create_deal(team.member, team.contact_id)
    deal = await patch_deal(team.member, deal["id"], stage="proposal")

    response = await team.manager.patch(f"/deals/{deal['id']}", json={"stage": "qualification"})

    assert_problem(response, 403, "STAGE_ROLLBACK_FORBIDDEN")
    await assert_refused_without_trace(engine, team.owner, deal, 1)


async def test_every_role_may_skip_straight_to_closed(
    team: Team, subtests: pytest.Subtests
) -> None:
    for role in ROLES:
        with subtests.test(role):
            actor = team.by_role(role)
            deal = await create_deal(actor, team.contact_id)

            closed = await patch_deal(actor, deal["id"], stage="closed")

            assert closed["stage"] == "closed"
            assert closed["status"] == "new"  # status and stage are independent
            assert await timeline(actor, deal["id"]) == [
                stage_changed("qualification", "closed", actor)
            ]


# --- who may change which deal ------------------------------------------------------------


async def test_member_may_not_change_or_delete_anothers_deal(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    deal = await create_deal(team.manager, team.contact_id, amount=50)
    for body in ({"title": "Mine now"}, {"status": "in_progress"}, {"stage": "proposal"}):
        with subtests.test(body=body):
            response = await team.member.patch(f"/deals/{deal['id']}", json=body)
            assert_problem(response, 403)
            await assert_refused_without_trace(engine, team.owner, deal, 0)
    with subtests.test("delete"):
        assert_problem(await team.member.delete(f"/deals/{deal['id']}"), 403)
        await assert_refused_without_trace(engine, team.owner, deal, 0)


async def test_member_may_change_and_delete_own_deal(team: Team, engine: AsyncEngine) -> None:
    deal = await create_deal(team.member, team.contact_id)

    patched = await patch_deal(team.member, deal["id"], title="Renamed", amount=9)

    assert (patched["title"], patched["amount"]) == ("Renamed", 9)
    assert (await team.member.delete(f"/deals/{deal['id']}")).status_code == 204
    assert await count_live(engine, "deals", "id = :id", id=deal["id"]) == 0


async def test_manager_and_above_change_and_delete_anyones_deal(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for role in MANAGING_ROLES:
        with subtests.test(role):
            actor = team.by_role(role)
            deal = await create_deal(team.member, team.contact_id)

            patched = await patch_deal(actor, deal["id"], title="By " + role, status="in_progress")

            assert patched["title"] == "By " + role
            assert patched["owner_id"] == team.member.id
            assert await timeline(team.owner, deal["id"]) == [
                status_changed("new", "in_progress", actor)
            ]
            assert (await actor.delete(f"/deals/{deal['id']}")).status_code == 204
            assert await count_live(engine, "deals", "id = :id", id=deal["id"]) == 0


async def test_member_may_not_reassign_a_deal(team: Team, engine: AsyncEngine) -> None:
    deal = await create_deal(team.member, team.contact_id)

    response = await team.member.patch(f"/deals/{deal['id']}", json={"owner_id": team.manager.id})

    assert_problem(response, 403)
    await assert_refused_without_trace(engine, team.owner, deal, 0)


async def test_manager_and_above_reassign_a_deal_to_members_only(
    api: Api, team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    outsider = await api.register(organization_name="Elsewhere")
    for role in MANAGING_ROLES:
        with subtests.test(role):
            actor = team.by_role(role)
            deal = await create_deal(team.owner, team.contact_id)

            for owner_id in (outsider.id, 987654321):
                response = await actor.patch(
                    f"/deals/{deal['id']}", json={"owner_id": owner_id, "status": "lost"}
                )
                assert_problem(response, 400, "OWNER_NOT_A_MEMBER")
                await assert_refused_without_trace(engine, team.owner, deal, 0)

            moved = await patch_deal(actor, deal["id"], owner_id=team.member.id)
            assert moved["owner_id"] == team.member.id
            # The new owner, a plain member, may now work on it.
            await patch_deal(team.member, deal["id"], title="Taken over")


async def test_contact_can_only_change_to_a_contact_of_this_organization(
    api: Api, team: Team, engine: AsyncEngine
) -> None:
    other = await api.register(organization_name="Other")
    foreign_contact = await create_contact(other, "Theirs")
    second_contact = await create_contact(team.owner, "Second")
    deal = await create_deal(team.owner, team.contact_id)

    for contact_id in (foreign_contact, 987654321):
        response = await team.owner.patch(
            f"/deals/{deal['id']}", json={"contact_id": contact_id, "status": "in_progress"}
        )
        assert_problem(response, 400, "CONTACT_NOT_FOUND")
        await assert_refused_without_trace(engine, team.owner, deal, 0)

    moved = await patch_deal(team.owner, deal["id"], contact_id=second_contact)
    assert moved["contact_id"] == second_contact
    # The first contact is no longer referenced, so it can go.
    assert (await team.owner.delete(f"/contacts/{team.contact_id}")).status_code == 204


# --- the timeline -------------------------------------------------------------------------


async def test_each_real_change_appends_one_activity_by_the_caller(team: Team) -> None:
    deal = await create_deal(team.member, team.contact_id, amount=100)
    deal_id = deal["id"]

    await patch_deal(team.manager, deal_id, status="in_progress")
    await patch_deal(team.admin, deal_id, stage="proposal")
    await patch_deal(team.owner, deal_id, status="won", stage="closed")
    await patch_deal(team.member, deal_id, title="Only a title", amount=200)

    assert await timeline(team.member, deal_id) == [
        status_changed("new", "in_progress", team.manager),
        stage_changed("qualification", "proposal", team.admin),
        status_changed("in_progress", "won", team.owner),
        stage_changed("proposal", "closed", team.owner),
    ]
    final = await read_deal(team.owner, deal_id)
    assert (final["status"], final["stage"], final["amount"]) == ("won", "closed", 200)


async def test_setting_the_current_value_writes_nothing(team: Team, engine: AsyncEngine) -> None:
    deal = await create_deal(team.owner, team.contact_id, "Same")
    deal_id = deal["id"]

    same = await patch_deal(
        team.owner, deal_id, status="new", stage="qualification", title="Same", amount=0
    )
    assert (same["status"], same["stage"]) == ("new", "qualification")
    assert await activity_count(engine, deal_id) == 0

    await patch_deal(team.owner, deal_id, status="in_progress")
    await patch_deal(team.owner, deal_id, status="in_progress")
    # One field the same, the other really changing: only the real change is recorded.
    await patch_deal(team.owner, deal_id, status="in_progress", stage="proposal")

    assert await timeline(team.owner, deal_id) == [
        status_changed("new", "in_progress", team.owner),
        stage_changed("qualification", "proposal", team.owner),
    ]
    assert await activity_count(engine, deal_id) == 2


async def test_refused_patches_leave_no_activity(
    api: Api, team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    outsider = await api.register(organization_name="Elsewhere")
    foreign = await create_contact(outsider, "Theirs")
    deal = await create_deal(team.owner, team.contact_id)
    deal = await patch_deal(team.owner, deal["id"], stage="proposal")
    lost = {"status": "lost"}
    cases: list[tuple[User, dict[str, Any], int, str | None]] = [
        (team.owner, {"status": "won"}, 400, "DEAL_WON_REQUIRES_AMOUNT"),
        (team.manager, {**lost, "stage": "qualification"}, 403, "STAGE_ROLLBACK_FORBIDDEN"),
        (team.member, {**lost, "stage": "closed"}, 403, None),  # not the member's deal
        (team.owner, {**lost, "contact_id": foreign}, 400, "CONTACT_NOT_FOUND"),
        (team.owner, {**lost, "owner_id": outsider.id}, 400, "OWNER_NOT_A_MEMBER"),
        (team.owner, {**lost, "amount": -1}, 422, "VALIDATION_ERROR"),
        (team.owner, {"stage": "closed", "priority": 1}, 422, "VALIDATION_ERROR"),
    ]
    for actor, body, status, code in cases:
        with subtests.test(body=body):
            response = await actor.patch(f"/deals/{deal['id']}", json=body)
            assert_problem(response, status, code)
            await assert_refused_without_trace(engine, team.owner, deal, 1)


async def test_deleting_a_deal_trashes_its_tasks_and_timeline(
    team: Team, engine: AsyncEngine
) -> None:
    deal = await create_deal(team.owner, team.contact_id, amount=10)
    keep = await create_deal(team.owner, team.contact_id, "Keep")
    task_ids = []
    for target in (deal, keep):
        for title in ("Call", "Mail"):
            task = await team.owner.post("/tasks", json={"deal_id": target["id"], "title": title})
            assert task.status_code == 201, task.text
            task_ids.append(task.json()["id"])
        comment = await team.owner.post(
            f"/deals/{target['id']}/activities",
            json={"type": "comment", "payload": {"text": "Hello"}},
        )
        assert comment.status_code == 201, comment.text
        await patch_deal(team.owner, target["id"], status="in_progress")
    where = "deal_id = :id"
    assert await count_rows(engine, "tasks", where, id=deal["id"]) == 2
    assert await activity_count(engine, deal["id"]) == 4  # 2 task_created, comment, status

    # A refused delete keeps everything.
    assert_problem(await team.member.delete(f"/deals/{deal['id']}"), 403)
    assert await count_rows(engine, "tasks", where, id=deal["id"]) == 2
    assert await activity_count(engine, deal["id"]) == 4

    response = await team.owner.delete(f"/deals/{deal['id']}")

    assert response.status_code == 204
    assert await count_live(engine, "deals", "id = :id", id=deal["id"]) == 0
    assert await count_live(engine, "tasks", where, id=deal["id"]) == 0
    assert await count_trashed(engine, "tasks", where, id=deal["id"]) == 2
    assert await activity_count(engine, deal["id"]) == 4  # hidden with the deal, restorable
    assert_problem(await team.owner.get(f"/deals/{deal['id']}"), 404, "DEAL_NOT_FOUND")
    assert_problem(await team.owner.get(f"/deals/{deal['id']}/activities"), 404)
    for task_id in task_ids[:2]:
        assert_problem(await team.owner.get(f"/tasks/{task_id}"), 404)
    # The other deal is untouched.
    assert await count_rows(engine, "tasks", where, id=keep["id"]) == 2
    assert await activity_count(engine, keep["id"]) == 4
    for task_id in task_ids[2:]:
        assert (await team.owner.get(f"/tasks/{task_id}")).status_code == 200


# --- concurrency (PostgreSQL) --------------------------------------------------------------


def assert_chain(
    activities: list[dict[str, Any]], field: str, initial: str, final: str, targets: list[str]
) -> None:
    """Consecutive changes link up (old = previous new), so none was lost or based on a stale
    read, and the last one left the deal in its final state."""
    current = initial
    for activity in activities:
        old, new = activity["payload"][f"old_{field}"], activity["payload"][f"new_{field}"]
        assert old == current, activities
        assert new != old, activities
        current = new
    assert current == final
    # Every target some request set was, at some point, the deal's state.
    assert {t for t in targets if t != initial} <= {
        a["payload"][f"new_{field}"] for a in activities
    }


async def race_twenty_patches(api: Api) -> None:
    """20 concurrent PATCHes of one deal, alternating a status and a stage change."""
    owner = await api.register(organization_name="Race")
    admin = await api.member_of(owner, "admin")
    engine: AsyncEngine = api.app.state.resources.engine
    contact_id = await create_contact(owner)
    deal = await create_deal(owner, contact_id, amount=100)
    path = f"/deals/{deal['id']}"

    status_targets = [STATUSES[(1 + i) % 4] for i in range(10)]  # in_progress, won, lost, new...
    stage_targets = [STAGES[(1 + i) % 4] for i in range(10)]  # proposal, negotiation, closed...
    requests = []
    for i in range(10):
        actor = owner if i % 2 else admin  # both may move stages either way
        requests.append(actor.patch(path, json={"status": status_targets[i]}))
        requests.append(actor.patch(path, json={"stage": stage_targets[i]}))

    responses = await asyncio.gather(*requests)

    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        field, targets = ("status", status_targets) if i % 2 == 0 else ("stage", stage_targets)
        assert response.json()[field] == targets[i // 2]
    final = await read_deal(owner, deal["id"])
    listed = await owner.get(f"{path}/activities", params={"page_size": 100})
    activities = sorted(listed.json()["items"], key=lambda a: a["id"])
    by_status = [a for a in activities if a["type"] == "status_changed"]
    by_stage = [a for a in activities if a["type"] == "stage_changed"]
    assert len(by_status) + len(by_stage) == len(activities) == listed.json()["total"]
    assert_chain(by_status, "status", "new", final["status"], status_targets)
    assert_chain(by_stage, "stage", "qualification", final["stage"], stage_targets)
    assert 1 <= len(by_status) <= 10
    assert 1 <= len(by_stage) <= 10
    assert {a["author_id"] for a in activities} <= {owner.id, admin.id}
    assert await activity_count(engine, deal["id"]) == len(activities)


async def test_concurrent_patches_of_one_deal_lose_nothing_on_postgresql(pg_api: Api) -> None:
    await race_twenty_patches(pg_api)


async def test_concurrent_patches_of_one_deal_lose_nothing(api: Api) -> None:
    await race_twenty_patches(api)
