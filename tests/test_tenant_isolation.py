"""Tenant isolation: another organization's rows are invisible (404, never 403), lists never
leak them, and the X-Organization-Id header is validated and checked against membership."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, User, assert_problem, count_rows

MISSING_ID = 987654321
TENANT_TABLES = ("companies", "contacts", "deals", "tasks", "activities")


@dataclass
class Records:
    contact: int
    deal: int
    task: int
    company: int


@dataclass
class World:
    """Organization A (owner `a`) and organization B (owner `b`, plus a plain member).

    `b` is also an admin of A: with the B header they must still see nothing of A."""

    a: User
    b: User
    b_member: User
    outsider: User
    in_a: Records
    in_b: Records


async def seed(user: User, label: str) -> Records:
    company = await user.post("/companies", json={"name": f"{label} company"})
    assert company.status_code == 201, company.text
    company_id = company.json()["id"]
    contact = await user.post(
        "/contacts", json={"name": f"{label} contact", "company_id": company_id}
    )
    assert contact.status_code == 201, contact.text
    deal = await user.post(
        "/deals",
        json={
            "contact_id": contact.json()["id"],
            "title": f"{label} deal",
            "amount": 50,
            "company_id": company_id,
        },
    )
    assert deal.status_code == 201, deal.text
    deal_id = deal.json()["id"]
    task = await user.post("/tasks", json={"deal_id": deal_id, "title": f"{label} task"})
    assert task.status_code == 201, task.text
    comment = await user.post(
        f"/deals/{deal_id}/activities", json={"type": "comment", "payload": {"text": label}}
    )
    assert comment.status_code == 201, comment.text
    changed = await user.patch(f"/deals/{deal_id}", json={"status": "in_progress"})
    assert changed.status_code == 200, changed.text
    return Records(
        contact=contact.json()["id"], deal=deal_id, task=task.json()["id"], company=company_id
    )


@pytest.fixture
async def world(api: Api, owner: User) -> World:
    b = await api.register(organization_name="Beta")
    added = await owner.post(
        f"/organizations/{owner.organization_id}/members", json={"email": b.email, "role": "admin"}
    )
    assert added.status_code == 201, added.text
    return World(
        a=owner,
        b=b,
        b_member=await api.member_of(b, "member"),
        outsider=await api.register(organization_name="Gamma"),
        in_a=await seed(owner, "Alpha"),
        in_b=await seed(b, "Beta"),
    )


async def snapshot(engine: AsyncEngine, user: User, records: Records) -> dict[str, Any]:
    """Everything an organization's owner can see of its records, plus raw row counts."""
    state: dict[str, Any] = {}
    for key, path in (
        ("company", f"/companies/{records.company}"),
        ("contact", f"/contacts/{records.contact}"),
        ("deal", f"/deals/{records.deal}"),
        ("task", f"/tasks/{records.task}"),
        ("timeline", f"/deals/{records.deal}/activities"),
    ):
        response = await user.get(path)
        assert response.status_code == 200, response.text
        state[key] = response.json()
    for table in TENANT_TABLES:
        state[table] = await count_rows(
            engine, table, "organization_id = :org", org=user.organization_id
        )
    return state


async def send(
    api: Api, method: str, path: str, headers: dict[str, str], body: Any = None
) -> httpx.Response:
    return await api.client.request(method, api.url(path), json=body, headers=headers)


ITEM_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/companies/{company}", None),
    ("PATCH", "/companies/{company}", {"name": "Hacked"}),
    ("DELETE", "/companies/{company}", None),
    ("GET", "/contacts/{contact}", None),
    ("PATCH", "/contacts/{contact}", {"name": "Hacked"}),
    ("DELETE", "/contacts/{contact}", None),
    ("GET", "/deals/{deal}", None),
    ("PATCH", "/deals/{deal}", {"title": "Hacked", "status": "lost"}),
    ("DELETE", "/deals/{deal}", None),
    ("GET", "/tasks/{task}", None),
    ("PATCH", "/tasks/{task}", {"title": "Hacked", "is_done": True}),
    ("DELETE", "/tasks/{task}", None),
    ("GET", "/deals/{deal}/activities", None),
    ("POST", "/deals/{deal}/activities", {"type": "comment", "payload": {"text": "Hi"}}),
]


@pytest.mark.parametrize("who", ["b", "b_member"])
async def test_another_organizations_ids_answer_exactly_like_missing_ones(
    api: Api, world: World, engine: AsyncEngine, subtests: pytest.Subtests, who: str
) -> None:
    actor: User = getattr(world, who)
    a_before = await snapshot(engine, world.a, world.in_a)
    b_before = await snapshot(engine, world.b, world.in_b)
    foreign = {
        "contact": world.in_a.contact,
        "deal": world.in_a.deal,
        "task": world.in_a.task,
        "company": world.in_a.company,
    }
    missing = dict.fromkeys(foreign, MISSING_ID)

    for method, template, body in ITEM_ENDPOINTS:
        with subtests.test(f"{method} {template}"):
            path = template.format(**foreign)
            response = await send(api, method, path, actor.headers(), body)
            absent = await send(api, method, template.format(**missing), actor.headers(), body)

            problem = assert_problem(response, 404)
            expected = assert_problem(absent, 404)
            assert (problem["code"], problem["detail"]) == (expected["code"], expected["detail"])
            assert await snapshot(engine, world.a, world.in_a) == a_before
    assert await snapshot(engine, world.b, world.in_b) == b_before


async def test_lists_show_only_the_header_organizations_rows(
    world: World, subtests: pytest.Subtests
) -> None:
    b, in_a, in_b = world.b, world.in_a, world.in_b
    cases: list[tuple[str, dict[str, Any], list[int]]] = [
        ("/companies", {}, [in_b.company]),
        ("/companies", {"search": "Alpha"}, []),
        ("/companies", {"owner_id": world.a.id}, []),
        ("/contacts", {}, [in_b.contact]),
        ("/contacts", {"company_id": in_a.company}, []),
        ("/contacts", {"search": "Alpha"}, []),
        ("/contacts", {"owner_id": world.a.id}, []),
        ("/deals", {}, [in_b.deal]),
        ("/deals", {"contact_id": in_a.contact}, []),
        ("/deals", {"company_id": in_a.company}, []),
        ("/deals", {"owner_id": world.a.id}, []),
        ("/deals", {"search": "alpha"}, []),
        ("/tasks", {}, [in_b.task]),
        ("/tasks", {"deal_id": in_a.deal}, []),
    ]
    for path, params, expected in cases:
        with subtests.test(path=path, params=params):
            response = await b.get(path, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert [item["id"] for item in body["items"]] == expected
            assert body["total"] == len(expected)
    with subtests.test("the same user sees A's rows with A's header"):
        response = await b.api.client.get(
            b.api.url("/deals"), headers=b.headers(organization_id=world.a.organization_id)
        )
        assert [item["id"] for item in response.json()["items"]] == [in_a.deal]


async def test_linking_to_another_organizations_records_is_refused(
    world: World, engine: AsyncEngine
) -> None:
    a_before = await snapshot(engine, world.a, world.in_a)
    b_before = await snapshot(engine, world.b, world.in_b)

    task = await world.b.post("/tasks", json={"deal_id": world.in_a.deal, "title": "Sneaky"})
    deal = await world.b.post("/deals", json={"contact_id": world.in_a.contact, "title": "Sneaky"})
    moved = await world.b.patch(
        f"/deals/{world.in_b.deal}", json={"contact_id": world.in_a.contact}
    )

    assert_problem(task, 404, "DEAL_NOT_FOUND")
    assert_problem(deal, 400, "CONTACT_NOT_FOUND")
    assert_problem(moved, 400, "CONTACT_NOT_FOUND")
    assert await snapshot(engine, world.a, world.in_a) == a_before
    assert await snapshot(engine, world.b, world.in_b) == b_before


async def test_invalid_organization_header_is_422(
    api: Api, owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for header in (None, "", "abc", "0", "-1", "1.5", "99999999999999999999"):
        with subtests.test(header=header):
            headers = {"Authorization": f"Bearer {owner.access_token}"}
            if header is not None:
                headers["X-Organization-Id"] = header

            listed = await send(api, "GET", "/contacts", headers)
            created = await send(api, "POST", "/contacts", headers, {"name": "Nobody"})

            assert_problem(listed, 422, "VALIDATION_ERROR")
            assert_problem(created, 422, "VALIDATION_ERROR")
            assert await count_rows(engine, "contacts") == 0


async def test_an_organization_the_caller_does_not_belong_to_is_403(
    api: Api, world: World, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    a_before = await snapshot(engine, world.a, world.in_a)
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/contacts", None),
        ("POST", "/contacts", {"name": "Intruder"}),
        ("GET", f"/deals/{world.in_a.deal}", None),
        ("PATCH", f"/deals/{world.in_a.deal}", {"title": "Hacked"}),
        ("DELETE", f"/tasks/{world.in_a.task}", None),
        ("POST", "/tasks", {"deal_id": world.in_a.deal, "title": "Intruder"}),
    ]
    for organization_id in (world.a.organization_id, MISSING_ID):
        headers = world.outsider.headers(organization_id=organization_id)
        for method, path, body in requests:
            with subtests.test(f"{method} {path}", organization_id=organization_id):
                response = await send(api, method, path, headers, body)
                assert_problem(response, 403, "NOT_A_MEMBER")
    assert await snapshot(engine, world.a, world.in_a) == a_before


async def test_requests_without_valid_credentials_are_401(
    api: Api, world: World, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    a_before = await snapshot(engine, world.a, world.in_a)
    org = str(world.a.organization_id)
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/contacts", None),
        ("POST", "/contacts", {"name": "Anon"}),
        ("PATCH", f"/contacts/{world.in_a.contact}", {"name": "Anon"}),
        ("DELETE", f"/deals/{world.in_a.deal}", None),
        ("POST", "/deals", {"contact_id": world.in_a.contact, "title": "Anon"}),
        ("GET", f"/tasks/{world.in_a.task}", None),
        (
            "POST",
            f"/deals/{world.in_a.deal}/activities",
            {"type": "comment", "payload": {"text": "x"}},
        ),
    ]
    credentials: dict[str, dict[str, str]] = {
        "no Authorization": {},
        "garbage token": {"Authorization": "Bearer not-a-jwt"},
        "refresh token": {"Authorization": f"Bearer {world.a.refresh_token}"},
        "wrong scheme": {"Authorization": f"Basic {world.a.access_token}"},
    }
    for case, auth in credentials.items():
        for method, path, body in requests:
            with subtests.test(f"{method} {path}", case=case):
                response = await send(api, method, path, {**auth, "X-Organization-Id": org}, body)
                assert_problem(response, 401)
                assert response.headers["www-authenticate"] == "Bearer"
    assert await snapshot(engine, world.a, world.in_a) == a_before
