"""The deal timeline through the API: newest-first pagination, comments by every role, and
the refusal of anything but a non-empty comment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, User, assert_problem, count_rows

# `actor` names who made the entry: the author, or the API key that acted for them.
ACTIVITY_KEYS = {"id", "deal_id", "author_id", "actor", "type", "payload", "created_at"}
PAGE_KEYS = {"items", "total", "page", "page_size", "pages"}


async def new_deal(user: User, title: str = "Deal", amount: str = "100") -> dict[str, Any]:
    contact = await user.post("/contacts", json={"name": f"Contact of {title}"})
    assert contact.status_code == 201, contact.text
    deal = await user.post(
        "/deals", json={"contact_id": contact.json()["id"], "title": title, "amount": amount}
    )
    assert deal.status_code == 201, deal.text
    body: dict[str, Any] = deal.json()
    return body


async def comment(user: User, deal_id: int, text: str) -> dict[str, Any]:
    response = await user.post(
        f"/deals/{deal_id}/activities", json={"type": "comment", "payload": {"text": text}}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def activities_of(engine: AsyncEngine, deal_id: int) -> int:
    return await count_rows(engine, "activities", "deal_id = :d", d=deal_id)


def assert_timestamp(value: str) -> None:
    assert datetime.fromisoformat(value).utcoffset() is not None, value


# --- reading the timeline ----------------------------------------------------------------


async def test_timeline_is_newest_first_and_paginated(owner: User) -> None:
    deal = await new_deal(owner)
    first = await comment(owner, deal["id"], "first")
    moved = await owner.patch(f"/deals/{deal['id']}", json={"status": "in_progress"})
    assert moved.status_code == 200, moved.text
    second = await comment(owner, deal["id"], "second")
    third = await comment(owner, deal["id"], "third")

    response = await owner.get(f"/deals/{deal['id']}/activities")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PAGE_KEYS
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (4, 1, 20, 1)
    items = body["items"]
    assert [(a["type"], a["payload"]) for a in items] == [
        ("comment", {"text": "third"}),
        ("comment", {"text": "second"}),
        ("status_changed", {"old_status": "new", "new_status": "in_progress"}),
        ("comment", {"text": "first"}),
    ]
    assert items[0] == third
    assert items[1] == second
    assert items[3] == first
    times = [datetime.fromisoformat(a["created_at"]) for a in items]
    assert times == sorted(times, reverse=True)

    pages = [
        (await owner.get(f"/deals/{deal['id']}/activities", params={"page": p, "page_size": 3}))
        for p in (1, 2, 3)
    ]
    assert [[a["id"] for a in p.json()["items"]] for p in pages] == [
        [a["id"] for a in items[:3]],
        [items[3]["id"]],
        [],
    ]
    for number, page in enumerate(pages, start=1):
        assert (page.json()["total"], page.json()["page"], page.json()["pages"]) == (4, number, 2)


async def test_timeline_ties_on_created_at_are_broken_by_id_newest_first(
    owner: User, engine: AsyncEngine
) -> None:
    deal = await new_deal(owner)
    created = [(await comment(owner, deal["id"], f"c{i}"))["id"] for i in range(4)]
    async with engine.begin() as conn:  # one instant for all of them
        await conn.execute(
            text(
                "UPDATE activities SET created_at = "
                "(SELECT min(created_at) FROM activities WHERE deal_id = :d) WHERE deal_id = :d"
            ),
            {"d": deal["id"]},
        )

    response = await owner.get(f"/deals/{deal['id']}/activities")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert len({a["created_at"] for a in items}) == 1
    assert [a["id"] for a in items] == sorted(created, reverse=True)

    paged = [
        a["id"]
        for p in (1, 2)
        for a in (
            await owner.get(f"/deals/{deal['id']}/activities", params={"page": p, "page_size": 2})
        ).json()["items"]
    ]
    assert paged == sorted(created, reverse=True)


async def test_timeline_of_a_deal_only_shows_that_deal(owner: User) -> None:
    deal = await new_deal(owner, "One")
    other = await new_deal(owner, "Two")
    await comment(owner, other["id"], "elsewhere")
    mine = await comment(owner, deal["id"], "here")

    response = await owner.get(f"/deals/{deal['id']}/activities")

    assert [a["id"] for a in response.json()["items"]] == [mine["id"]]
    assert response.json()["total"] == 1


async def test_timeline_rejects_invalid_pagination(owner: User, subtests: pytest.Subtests) -> None:
    deal = await new_deal(owner)
    for params in ({"page": 0}, {"page_size": 0}, {"page_size": 101}, {"page": "x"}):
        with subtests.test(str(params)):
            response = await owner.get(f"/deals/{deal['id']}/activities", params=params)
            assert_problem(response, 422)
    assert_problem(await owner.get("/deals/0/activities"), 422)


# --- commenting --------------------------------------------------------------------------


async def test_every_role_may_comment_on_any_deal(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    callers = {
        "owner": owner,
        "admin": await api.member_of(owner, "admin"),
        "manager": await api.member_of(owner, "manager"),
        "member": await api.member_of(owner, "member"),
    }
    deal = await new_deal(owner, "Owner's")  # not the member's (nor anyone else's) deal
    before = datetime.now(UTC) - timedelta(seconds=5)

    for role, caller in callers.items():
        response = await caller.post(
            f"/deals/{deal['id']}/activities",
            json={"type": "comment", "payload": {"text": f"Note from the {role}"}},
        )
        assert response.status_code == 201, response.text
        activity = response.json()
        assert set(activity) == ACTIVITY_KEYS
        assert isinstance(activity["id"], int)
        assert activity["deal_id"] == deal["id"]
        assert activity["author_id"] == caller.id
        assert activity["type"] == "comment"
        assert activity["payload"] == {"text": f"Note from the {role}"}
        assert_timestamp(activity["created_at"])
        assert datetime.fromisoformat(activity["created_at"]) >= before

    timeline = (await owner.get(f"/deals/{deal['id']}/activities")).json()["items"]
    assert [(a["author_id"], a["payload"]["text"]) for a in timeline] == [
        (callers[role].id, f"Note from the {role}")
        for role in ("member", "manager", "admin", "owner")
    ]
    assert await activities_of(engine, deal["id"]) == 4


async def test_comment_text_keeps_unicode_and_is_trimmed(owner: User) -> None:
    deal = await new_deal(owner)

    activity = await comment(owner, deal["id"], "  Позвонить Ивану и Müller 📞  ")

    assert activity["payload"] == {"text": "Позвонить Ивану и Müller 📞"}


async def test_comment_rejects_invalid_bodies_and_writes_nothing(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    deal = await new_deal(owner)
    path = f"/deals/{deal['id']}/activities"
    cases: dict[str, Any] = {
        "type system": {"type": "system", "payload": {"text": "hi"}},
        "type status_changed": {
            "type": "status_changed",
            "payload": {"old_status": "new", "new_status": "won"},
        },
        "type status_changed with text": {"type": "status_changed", "payload": {"text": "hi"}},
        "type stage_changed": {"type": "stage_changed", "payload": {"text": "hi"}},
        "type task_created": {"type": "task_created", "payload": {"text": "hi"}},
        "type bogus": {"type": "bogus", "payload": {"text": "hi"}},
        "type upper case": {"type": "COMMENT", "payload": {"text": "hi"}},
        "no type": {"payload": {"text": "hi"}},
        "empty text": {"type": "comment", "payload": {"text": ""}},
        "whitespace text": {"type": "comment", "payload": {"text": "   "}},
        "tabs and newlines": {"type": "comment", "payload": {"text": "\t\n "}},
        "null text": {"type": "comment", "payload": {"text": None}},
        "number text": {"type": "comment", "payload": {"text": 42}},
        "text too long": {"type": "comment", "payload": {"text": "x" * 5001}},
        "NUL in text": {"type": "comment", "payload": {"text": "a\u0000b"}},
        "missing text": {"type": "comment", "payload": {}},
        "missing payload": {"type": "comment"},
        "null payload": {"type": "comment", "payload": None},
        "payload a string": {"type": "comment", "payload": "hi"},
        "extra payload field": {"type": "comment", "payload": {"text": "hi", "pinned": True}},
        "extra top-level field": {"type": "comment", "payload": {"text": "hi"}, "author_id": 1},
        "deal_id in body": {"type": "comment", "payload": {"text": "hi"}, "deal_id": deal["id"]},
        "empty object": {},
        "not an object": ["comment"],
    }
    for name, body in cases.items():
        with subtests.test(name):
            response = await owner.post(path, json=body)
            problem = assert_problem(response, 422)
            assert problem["errors"]
    assert await activities_of(engine, deal["id"]) == 0
    assert (await owner.get(path)).json()["total"] == 0


async def test_another_organizations_deal_is_404_and_nothing_is_written(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    stranger = await api.register(organization_name="Other")
    foreign = await new_deal(stranger, "Theirs")
    theirs = await comment(stranger, foreign["id"], "private")
    missing = foreign["id"] + 1000

    for deal_id in (foreign["id"], missing):
        assert_problem(await owner.get(f"/deals/{deal_id}/activities"), 404)
        posted = await owner.post(
            f"/deals/{deal_id}/activities", json={"type": "comment", "payload": {"text": "hi"}}
        )
        body = assert_problem(posted, 404)
        assert "private" not in body["detail"]

    assert await count_rows(engine, "activities") == 1
    assert (await stranger.get(f"/deals/{foreign['id']}/activities")).json()["items"] == [theirs]


async def test_timeline_needs_credentials_and_membership(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    deal = await new_deal(owner)
    outsider = await api.register(organization_name="Elsewhere")
    path = api.url(f"/deals/{deal['id']}/activities")
    body = {"type": "comment", "payload": {"text": "hi"}}
    header_sets = {
        401: {"X-Organization-Id": str(owner.organization_id)},
        403: outsider.headers(owner.organization_id),
        422: {"Authorization": owner.headers()["Authorization"]},
    }
    for status, headers in header_sets.items():
        listed = await api.client.get(path, headers=headers)
        posted = await api.client.post(path, json=body, headers=headers)
        for response in (listed, posted):
            assert_problem(response, status, "NOT_A_MEMBER" if status == 403 else None)
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"

    assert await activities_of(engine, deal["id"]) == 0


async def test_deleting_a_deal_hides_its_timeline(owner: User, engine: AsyncEngine) -> None:
    deal = await new_deal(owner)
    kept = await new_deal(owner, "Kept")
    await comment(owner, deal["id"], "bye")
    await comment(owner, kept["id"], "stay")

    assert (await owner.delete(f"/deals/{deal['id']}")).status_code == 204

    assert_problem(await owner.get(f"/deals/{deal['id']}/activities"), 404)
    assert_problem(await owner.get(f"/deals/{deal['id']}/activities", params={"limit": 5}), 404)
    comment_body = {"type": "comment", "payload": {"text": "late"}}
    assert_problem(await owner.post(f"/deals/{deal['id']}/activities", json=comment_body), 404)
    # Kept with the deal in the trash (restoring it brings them back; the purge deletes them).
    assert await activities_of(engine, deal["id"]) == 1
    assert await activities_of(engine, kept["id"]) == 1
