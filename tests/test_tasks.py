"""Tasks through the API: creation with its `task_created` activity, the due-date rule, who may
touch which task, partial updates, deletion, and the filtered, ordered, paginated list."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Date, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, Team, User, assert_problem, count_live, count_rows, count_trashed

TASK_KEYS = {
    "id",
    "deal_id",
    "title",
    "description",
    "due_date",
    "is_done",
    "created_at",
    "updated_at",
}
PAGE_KEYS = {"items", "total", "page", "page_size", "pages"}


def today() -> date:
    return datetime.now(UTC).date()


def day(offset: int) -> str:
    return (today() + timedelta(days=offset)).isoformat()


def assert_timestamp(value: str) -> None:
    assert datetime.fromisoformat(value).utcoffset() is not None, value


async def new_deal(user: User, title: str = "Deal") -> dict[str, Any]:
    contact = await user.post("/contacts", json={"name": f"Contact of {title}"})
    assert contact.status_code == 201, contact.text
    deal = await user.post("/deals", json={"contact_id": contact.json()["id"], "title": title})
    assert deal.status_code == 201, deal.text
    body: dict[str, Any] = deal.json()
    return body


async def new_task(user: User, deal_id: int, title: str = "Call", **fields: Any) -> dict[str, Any]:
    response = await user.post("/tasks", json={"deal_id": deal_id, "title": title, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def read_task(user: User, task_id: int) -> dict[str, Any]:
    response = await user.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def timeline(user: User, deal_id: int) -> list[dict[str, Any]]:
    response = await user.get(f"/deals/{deal_id}/activities", params={"page_size": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def tasks_of(engine: AsyncEngine, deal_id: int) -> int:
    """The deal's tasks that are not in the trash."""
    return await count_live(engine, "tasks", "deal_id = :d", d=deal_id)


async def activities_of(engine: AsyncEngine, deal_id: int) -> int:
    return await count_rows(engine, "activities", "deal_id = :d", d=deal_id)


async def set_due_date(engine: AsyncEngine, task_id: int, due: date) -> None:
    statement = text("UPDATE tasks SET due_date = :due WHERE id = :id").bindparams(
        bindparam("due", type_=Date())
    )
    async with engine.begin() as conn:
        await conn.execute(statement, {"due": due, "id": task_id})


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


# --- create ------------------------------------------------------------------------------


async def test_create_returns_the_task_and_appends_one_task_created_activity(
    owner: User, engine: AsyncEngine
) -> None:
    deal = await new_deal(owner)
    before = datetime.now(UTC) - timedelta(seconds=5)

    response = await owner.post(
        "/tasks",
        json={
            "deal_id": deal["id"],
            "title": "Send the proposal",
            "description": "PDF, both languages",
            "due_date": day(3),
        },
    )

    assert response.status_code == 201, response.text
    task = response.json()
    assert set(task) == TASK_KEYS
    assert isinstance(task["id"], int)
    assert task["deal_id"] == deal["id"]
    assert task["title"] == "Send the proposal"
    assert task["description"] == "PDF, both languages"
    assert task["due_date"] == day(3)
    assert task["is_done"] is False
    for key in ("created_at", "updated_at"):
        assert_timestamp(task[key])
        assert datetime.fromisoformat(task[key]) >= before
    assert await read_task(owner, task["id"]) == task

    activities = await timeline(owner, deal["id"])
    assert len(activities) == 1
    activity = activities[0]
    assert activity["type"] == "task_created"
    assert activity["deal_id"] == deal["id"]
    assert activity["author_id"] == owner.id
    assert activity["payload"] == {"task_id": task["id"], "task_title": "Send the proposal"}
    assert await activities_of(engine, deal["id"]) == 1
    assert await tasks_of(engine, deal["id"]) == 1


async def test_create_without_optional_fields(owner: User) -> None:
    deal = await new_deal(owner)

    task = await new_task(owner, deal["id"], title="  Call back  ")

    assert task["description"] is None
    assert task["due_date"] is None
    assert task["is_done"] is False
    assert task["title"] == "Call back"  # names and titles are trimmed


async def test_due_date_today_is_allowed(owner: User) -> None:
    deal = await new_deal(owner)

    task = await new_task(owner, deal["id"], due_date=day(0))

    assert task["due_date"] == today().isoformat()


async def test_due_date_in_the_past_is_refused_and_nothing_is_written(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    deal = await new_deal(owner)

    for due_date in (day(-1), day(-400), "1900-01-01"):
        with subtests.test(due_date):
            response = await owner.post(
                "/tasks", json={"deal_id": deal["id"], "title": "Late", "due_date": due_date}
            )
            assert_problem(response, 400, "DUE_DATE_IN_PAST")

    assert await count_rows(engine, "tasks") == 0
    assert await count_rows(engine, "activities") == 0


async def test_task_on_another_organizations_or_a_missing_deal_is_404(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    stranger = await api.register(organization_name="Other")
    foreign = await new_deal(stranger)
    own = await new_deal(owner)

    for deal_id in (foreign["id"], own["id"] + foreign["id"] + 1000):
        response = await owner.post("/tasks", json={"deal_id": deal_id, "title": "Nope"})
        body = assert_problem(response, 404)
        assert "Other" not in body["detail"]

    assert await count_rows(engine, "tasks") == 0
    assert await count_rows(engine, "activities") == 0
    # the deal is there for its own organization
    assert (await stranger.get(f"/deals/{foreign['id']}")).status_code == 200


async def test_member_creates_tasks_on_own_deals_only(team: Team, engine: AsyncEngine) -> None:
    others = await new_deal(team.owner, "Owner's")
    own = await new_deal(team.member, "Member's")

    refused = await team.member.post(
        "/tasks", json={"deal_id": others["id"], "title": "Sneak", "due_date": day(1)}
    )

    assert_problem(refused, 403)
    assert await tasks_of(engine, others["id"]) == 0
    assert await activities_of(engine, others["id"]) == 0

    task = await new_task(team.member, own["id"], title="Mine")
    assert task["deal_id"] == own["id"]
    assert [a["author_id"] for a in await timeline(team.member, own["id"])] == [team.member.id]


async def test_manager_and_above_create_tasks_on_anyones_deal(
    team: Team, engine: AsyncEngine
) -> None:
    deal = await new_deal(team.member, "Member's")
    expected: list[tuple[str, int, dict[str, Any]]] = []
    for role in ("owner", "admin", "manager"):
        caller = team.by_role(role)
        task = await new_task(caller, deal["id"], title=f"By {role}")
        expected.insert(
            0, ("task_created", caller.id, {"task_id": task["id"], "task_title": f"By {role}"})
        )

    activities = await timeline(team.member, deal["id"])
    assert [(a["type"], a["author_id"], a["payload"]) for a in activities] == expected
    assert await tasks_of(engine, deal["id"]) == 3


async def test_create_rejects_invalid_bodies(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    deal = await new_deal(owner)
    valid = {"deal_id": deal["id"], "title": "Call"}
    cases: dict[str, Any] = {
        "no title": {"deal_id": deal["id"]},
        "no deal": {"title": "Call"},
        "empty title": {**valid, "title": ""},
        "blank title": {**valid, "title": "   "},
        "null title": {**valid, "title": None},
        "title too long": {**valid, "title": "x" * 201},
        "deal_id zero": {**valid, "deal_id": 0},
        "deal_id text": {**valid, "deal_id": "abc"},
        "month 13": {**valid, "due_date": "2024-13-01"},
        "year 0": {**valid, "due_date": "0000-01-01"},
        "not a date": {**valid, "due_date": "tomorrow"},
        "unknown field": {**valid, "priority": "high"},
        "organization_id": {**valid, "organization_id": owner.organization_id},
        "is_done on create": {**valid, "is_done": True},
        "not an object": [valid],
    }
    for name, body in cases.items():
        with subtests.test(name):
            response = await owner.post("/tasks", json=body)
            problem = assert_problem(response, 422)
            assert problem["errors"]
    assert await count_rows(engine, "tasks") == 0
    assert await count_rows(engine, "activities") == 0


async def test_task_endpoints_need_credentials_and_membership(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    deal = await new_deal(owner)
    task = await new_task(owner, deal["id"])
    outsider = await api.register(organization_name="Elsewhere")
    no_token = {"X-Organization-Id": str(owner.organization_id)}
    foreign_org = outsider.headers(owner.organization_id)
    body = {"deal_id": deal["id"], "title": "x"}
    requests = [
        ("GET", "/tasks", None),
        ("POST", "/tasks", body),
        ("GET", f"/tasks/{task['id']}", None),
        ("PATCH", f"/tasks/{task['id']}", {"title": "Hijacked"}),
        ("DELETE", f"/tasks/{task['id']}", None),
    ]
    for method, path, json in requests:
        unauthenticated = await api.client.request(
            method, api.url(path), json=json, headers=no_token
        )
        assert_problem(unauthenticated, 401)
        assert unauthenticated.headers["www-authenticate"] == "Bearer"
        not_member = await api.client.request(method, api.url(path), json=json, headers=foreign_org)
        assert_problem(not_member, 403, "NOT_A_MEMBER")
        no_header = await api.client.request(
            method,
            api.url(path),
            json=json,
            headers={"Authorization": owner.headers()["Authorization"]},
        )
        assert_problem(no_header, 422)

    assert await read_task(owner, task["id"]) == task
    assert await count_rows(engine, "tasks") == 1
    assert await count_rows(engine, "activities") == 1


# --- read, update, delete one task -------------------------------------------------------


async def test_get_missing_or_foreign_task_is_404(api: Api, owner: User) -> None:
    stranger = await api.register(organization_name="Other")
    foreign = await new_task(stranger, (await new_deal(stranger))["id"])

    assert_problem(await owner.get(f"/tasks/{foreign['id']}"), 404)
    assert_problem(await owner.get(f"/tasks/{foreign['id'] + 1000}"), 404)
    assert_problem(await owner.get("/tasks/0"), 422)
    assert_problem(await owner.get("/tasks/abc"), 422)


async def test_patch_changes_only_the_fields_sent(owner: User, subtests: pytest.Subtests) -> None:
    deal = await new_deal(owner)
    task = await new_task(
        owner, deal["id"], title="Call", description="About price", due_date=day(2)
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("is_done", {"is_done": True}),
        ("title", {"title": "Call again"}),
        ("description", {"description": "About the discount"}),
        ("due_date", {"due_date": day(5)}),
        ("clear description", {"description": None}),
        ("clear due date", {"due_date": None}),
        ("reopen", {"is_done": False}),
        ("empty body", {}),
    ]
    expected = dict(task)
    for name, change in steps:
        with subtests.test(name):
            response = await owner.patch(f"/tasks/{task['id']}", json=change)
            assert response.status_code == 200, response.text
            expected.update(change)
            got = response.json()
            assert {k: v for k, v in got.items() if k != "updated_at"} == {
                k: v for k, v in expected.items() if k != "updated_at"
            }
            assert got["created_at"] == task["created_at"]
            assert_timestamp(got["updated_at"])
            if change:  # a real change moves updated_at forward
                updated = datetime.fromisoformat(got["updated_at"])
                assert updated > datetime.fromisoformat(expected["updated_at"])
            else:
                assert got["updated_at"] == expected["updated_at"]
            expected["updated_at"] = got["updated_at"]
            assert await read_task(owner, task["id"]) == got


async def test_patch_to_a_past_due_date_is_refused_and_changes_nothing(
    owner: User, engine: AsyncEngine
) -> None:
    deal = await new_deal(owner)
    task = await new_task(owner, deal["id"], due_date=day(2))

    response = await owner.patch(
        f"/tasks/{task['id']}", json={"due_date": day(-1), "title": "Renamed", "is_done": True}
    )

    assert_problem(response, 400, "DUE_DATE_IN_PAST")
    assert await read_task(owner, task["id"]) == task
    # today is still fine
    moved = await owner.patch(f"/tasks/{task['id']}", json={"due_date": day(0)})
    assert moved.status_code == 200, moved.text
    assert moved.json()["due_date"] == day(0)
    assert await activities_of(engine, deal["id"]) == 1  # only task_created


async def test_patch_keeps_an_old_due_date_that_has_since_passed(
    owner: User, engine: AsyncEngine
) -> None:
    deal = await new_deal(owner)
    task = await new_task(owner, deal["id"], due_date=day(1))
    overdue = today() - timedelta(days=3)
    await set_due_date(engine, task["id"], overdue)

    renamed = await owner.patch(f"/tasks/{task['id']}", json={"title": "Still to do"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Still to do"
    assert renamed.json()["due_date"] == overdue.isoformat()

    # re-sending the same stored date is not a change either
    same = await owner.patch(
        f"/tasks/{task['id']}", json={"due_date": overdue.isoformat(), "is_done": True}
    )
    assert same.status_code == 200, same.text
    assert same.json()["is_done"] is True
    assert same.json()["due_date"] == overdue.isoformat()

    # but moving it to another past date is refused
    earlier = await owner.patch(
        f"/tasks/{task['id']}", json={"due_date": (overdue - timedelta(days=1)).isoformat()}
    )
    assert_problem(earlier, 400, "DUE_DATE_IN_PAST")
    assert await read_task(owner, task["id"]) == same.json()


async def test_patch_rejects_invalid_bodies_and_changes_nothing(
    owner: User, subtests: pytest.Subtests
) -> None:
    deal = await new_deal(owner)
    task = await new_task(owner, deal["id"], description="Keep me", due_date=day(1))
    cases: dict[str, Any] = {
        "null title": {"title": None},
        "blank title": {"title": "  "},
        "null is_done": {"is_done": None},
        "is_done not a bool": {"is_done": "perhaps"},
        "unknown field": {"priority": "high"},
        "deal_id": {"deal_id": deal["id"]},
        "organization_id": {"organization_id": owner.organization_id},
        "id": {"id": task["id"] + 1},
        "month 13": {"due_date": "2024-13-01"},
        "year 0": {"due_date": "0000-01-01"},
        "valid field with unknown one": {"title": "New", "colour": "red"},
    }
    for name, body in cases.items():
        with subtests.test(name):
            assert_problem(await owner.patch(f"/tasks/{task['id']}", json=body), 422)
    assert await read_task(owner, task["id"]) == task


async def test_member_changes_tasks_of_own_deals_only(team: Team, engine: AsyncEngine) -> None:
    others_deal = await new_deal(team.manager, "Manager's")
    others_task = await new_task(team.manager, others_deal["id"], due_date=day(1))
    own_deal = await new_deal(team.member, "Member's")
    own_task = await new_task(team.member, own_deal["id"])

    patched = await team.member.patch(f"/tasks/{others_task['id']}", json={"is_done": True})
    assert_problem(patched, 403)
    deleted = await team.member.delete(f"/tasks/{others_task['id']}")
    assert_problem(deleted, 403)
    assert await read_task(team.member, others_task["id"]) == others_task  # may still read

    done = await team.member.patch(f"/tasks/{own_task['id']}", json={"is_done": True})
    assert done.status_code == 200, done.text
    assert done.json()["is_done"] is True
    gone = await team.member.delete(f"/tasks/{own_task['id']}")
    assert gone.status_code == 204, gone.text
    assert await tasks_of(engine, own_deal["id"]) == 0
    assert await tasks_of(engine, others_deal["id"]) == 1


async def test_task_follows_its_deal_owner_for_members(team: Team) -> None:
    """ "Own" means the deal's owner: a task created by a manager on the member's deal is the
    member's to change."""
    deal = await new_deal(team.member, "Member's")
    task = await new_task(team.manager, deal["id"])

    response = await team.member.patch(f"/tasks/{task['id']}", json={"title": "Taken over"})

    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Taken over"


async def test_manager_and_above_change_anyones_tasks(team: Team, engine: AsyncEngine) -> None:
    deal = await new_deal(team.member, "Member's")
    for role in ("owner", "admin", "manager"):
        caller = team.by_role(role)
        task = await new_task(team.member, deal["id"])

        patched = await caller.patch(f"/tasks/{task['id']}", json={"title": f"Reviewed by {role}"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["title"] == f"Reviewed by {role}"
        deleted = await caller.delete(f"/tasks/{task['id']}")
        assert deleted.status_code == 204, deleted.text
        assert await tasks_of(engine, deal["id"]) == 0


async def test_patch_or_delete_another_organizations_task_is_404(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    stranger = await api.register(organization_name="Other")
    foreign = await new_task(stranger, (await new_deal(stranger))["id"], title="Theirs")

    assert_problem(await owner.patch(f"/tasks/{foreign['id']}", json={"title": "Mine"}), 404)
    assert_problem(await owner.delete(f"/tasks/{foreign['id']}"), 404)
    assert_problem(await owner.patch(f"/tasks/{foreign['id'] + 1000}", json={"title": "x"}), 404)
    assert_problem(await owner.delete(f"/tasks/{foreign['id'] + 1000}"), 404)

    assert await read_task(stranger, foreign["id"]) == foreign
    assert await count_rows(engine, "tasks") == 1


async def test_delete_removes_the_task(owner: User, engine: AsyncEngine) -> None:
    deal = await new_deal(owner)
    task = await new_task(owner, deal["id"])
    kept = await new_task(owner, deal["id"], title="Keep")

    response = await owner.delete(f"/tasks/{task['id']}")

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await owner.get(f"/tasks/{task['id']}"), 404)
    assert_problem(await owner.delete(f"/tasks/{task['id']}"), 404)
    assert await read_task(owner, kept["id"]) == kept
    assert await tasks_of(engine, deal["id"]) == 1


async def test_deleting_a_deal_trashes_its_tasks(owner: User, engine: AsyncEngine) -> None:
    deal = await new_deal(owner)
    other = await new_deal(owner, "Other")
    task = await new_task(owner, deal["id"])
    await new_task(owner, other["id"])

    assert (await owner.delete(f"/deals/{deal['id']}")).status_code == 204

    assert_problem(await owner.get(f"/tasks/{task['id']}"), 404)
    assert await tasks_of(engine, deal["id"]) == 0
    assert await count_trashed(engine, "tasks", "deal_id = :d", d=deal["id"]) == 1
    assert await tasks_of(engine, other["id"]) == 1


# --- list --------------------------------------------------------------------------------


async def test_list_orders_by_due_date_with_undated_last_then_id(owner: User) -> None:
    deal = await new_deal(owner)
    plan = [3, None, 1, 3, None, 2, 0]
    created = [
        (await new_task(owner, deal["id"], title=f"T{i}", due_date=None if d is None else day(d)))
        for i, d in enumerate(plan)
    ]
    expected = [
        t["id"]
        for t in sorted(
            created, key=lambda t: (t["due_date"] is None, t["due_date"] or "", t["id"])
        )
    ]

    response = await owner.get("/tasks")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PAGE_KEYS
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (7, 1, 20, 1)
    assert [t["id"] for t in body["items"]] == expected
    assert [t["due_date"] for t in body["items"]] == [
        day(0),
        day(1),
        day(2),
        day(3),
        day(3),
        None,
        None,
    ]
    assert set(body["items"][0]) == TASK_KEYS


async def test_list_pagination(owner: User) -> None:
    deal = await new_deal(owner)
    created = [(await new_task(owner, deal["id"], title=f"T{i}"))["id"] for i in range(5)]

    pages = [await owner.get("/tasks", params={"page": p, "page_size": 2}) for p in (1, 2, 3, 4)]

    bodies = [p.json() for p in pages]
    assert [ids(p) for p in pages] == [created[0:2], created[2:4], created[4:5], []]
    for number, body in enumerate(bodies, start=1):
        assert (body["total"], body["page"], body["page_size"], body["pages"]) == (5, number, 2, 3)


async def test_list_filters(api: Api, owner: User) -> None:
    first = await new_deal(owner, "First")
    second = await new_deal(owner, "Second")
    a = await new_task(owner, first["id"], title="a", due_date=day(1))
    b = await new_task(owner, first["id"], title="b", due_date=day(2))
    c = await new_task(owner, second["id"], title="c", due_date=day(3))
    d = await new_task(owner, second["id"], title="d")
    e = await new_task(owner, first["id"], title="e", due_date=day(2))
    done = await owner.patch(f"/tasks/{b['id']}", json={"is_done": True})
    assert done.status_code == 200, done.text
    stranger = await api.register(organization_name="Other")
    await new_task(stranger, (await new_deal(stranger))["id"], due_date=day(2))

    async def listed(**params: Any) -> list[int]:
        return ids(await owner.get("/tasks", params=params))

    assert await listed() == [a["id"], b["id"], e["id"], c["id"], d["id"]]
    assert await listed(deal_id=first["id"]) == [a["id"], b["id"], e["id"]]
    assert await listed(deal_id=second["id"]) == [c["id"], d["id"]]
    assert await listed(only_open="true") == [a["id"], e["id"], c["id"], d["id"]]
    assert await listed(only_open="false") == [a["id"], b["id"], e["id"], c["id"], d["id"]]
    assert await listed(due_before=day(2)) == [a["id"], b["id"], e["id"]]
    assert await listed(due_after=day(2)) == [b["id"], e["id"], c["id"]]
    assert await listed(due_after=day(2), due_before=day(2)) == [b["id"], e["id"]]
    assert await listed(due_after=day(4)) == []
    assert await listed(due_before=day(0)) == []
    assert await listed(deal_id=first["id"], only_open="true", due_after=day(2)) == [e["id"]]
    # past dates are fine as filters
    assert await listed(due_after=day(-30)) == [a["id"], b["id"], e["id"], c["id"]]
    assert (await owner.get("/tasks", params={"deal_id": first["id"]})).json()["total"] == 3


async def test_list_rejects_invalid_query(owner: User, subtests: pytest.Subtests) -> None:
    cases: dict[str, dict[str, Any]] = {
        "due_before month 13": {"due_before": "2024-13-01"},
        "due_after month 13": {"due_after": "2024-13-01"},
        "due_before year 0": {"due_before": "0000-01-01"},
        "due_after year 0": {"due_after": "0000-01-01"},
        "not a date": {"due_after": "soon"},
        "only_open not a bool": {"only_open": "maybe"},
        "deal_id text": {"deal_id": "abc"},
        "deal_id zero": {"deal_id": 0},
        "page 0": {"page": 0},
        "page_size 0": {"page_size": 0},
        "page_size 101": {"page_size": 101},
    }
    for name, params in cases.items():
        with subtests.test(name):
            assert_problem(await owner.get("/tasks", params=params), 422)
