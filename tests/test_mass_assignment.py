"""Mass assignment: server-owned fields in a request body are refused (422), never applied.

`organization_id` and `owner_id` come from the header and the caller, ids and timestamps from
the server, a deal's status/stage start at new/qualification, a task starts open, a comment's
author is the caller, a role is never self-granted. Each refusal leaves every table unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Base
from tests.support import PASSWORD, Api, User, assert_problem, snapshot

TIMESTAMP = "2000-01-01T00:00:00Z"


@dataclass
class Setup:
    api: Api
    engine: AsyncEngine
    owner: User
    member: User
    stranger: User  # owner of another organization
    contact_id: int
    deal_id: int
    task_id: int


@pytest.fixture
async def setup(make_api: Callable[..., Awaitable[Api]], database_url: str) -> Setup:
    api = await make_api(database_url)
    owner = await api.register(organization_name="Acme")
    member = await api.member_of(owner, "member")
    stranger = await api.register(organization_name="Elsewhere")
    contact = await member.post("/contacts", json={"name": "Ann"})
    assert contact.status_code == 201, contact.text
    deal = await member.post("/deals", json={"contact_id": contact.json()["id"], "title": "Deal"})
    assert deal.status_code == 201, deal.text
    task = await member.post("/tasks", json={"deal_id": deal.json()["id"], "title": "Call"})
    assert task.status_code == 201, task.text
    return Setup(
        api=api,
        engine=api.app.state.resources.engine,
        owner=owner,
        member=member,
        stranger=stranger,
        contact_id=contact.json()["id"],
        deal_id=deal.json()["id"],
        task_id=task.json()["id"],
    )


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.name: int(
                (await conn.execute(text(f"SELECT count(*) FROM {table.name}"))).scalar_one()  # noqa: S608
            )
            for table in Base.metadata.sorted_tables
        }


def cases(s: Setup) -> list[tuple[str, User | None, str, str, dict[str, Any], str]]:
    """(who, method, path, valid body, extra field) -> each extra field alone must be a 422.

    `who` None means no authentication (registration)."""
    other_org = s.stranger.organization_id
    register = {
        "email": "new-user@example.com",
        "password": PASSWORD,
        "name": "New",
        "organization_name": "New org",
    }
    contact = {"name": "Bob"}
    deal = {"contact_id": s.contact_id, "title": "Big deal", "amount": "10"}
    task = {"deal_id": s.deal_id, "title": "Follow up"}
    comment = {"type": "comment", "payload": {"text": "Hello"}}
    org = f"/organizations/{s.owner.organization_id}"
    extras: list[tuple[str, User | None, str, dict[str, Any], dict[str, Any]]] = [
        (
            "POST",
            None,
            "/auth/register",
            register,
            {
                "role": "admin",
                "id": 999,
                "organization_id": other_org,
                "is_active": True,
                "is_superuser": True,
                "password_hash": "x",
                "created_at": TIMESTAMP,
            },
        ),
        (
            "POST",
            s.member,
            "/organizations",
            {"name": "Mine"},
            {"role": "member", "id": other_org, "owner_id": s.stranger.id, "created_at": TIMESTAMP},
        ),
        (
            "PATCH",
            s.owner,
            org,
            {"name": "Renamed"},
            {"id": other_org, "role": "member", "created_at": TIMESTAMP},
        ),
        (
            "POST",
            s.owner,
            f"{org}/members",
            {"email": s.stranger.email, "role": "member"},
            {"user_id": s.member.id, "organization_id": other_org, "joined_at": TIMESTAMP},
        ),
        (
            "PATCH",
            s.owner,
            f"{org}/members/{s.member.id}",
            {"role": "manager"},
            {"user_id": s.stranger.id, "email": "x@example.com", "organization_id": other_org},
        ),
        (
            "POST",
            s.member,
            "/contacts",
            contact,
            {
                "organization_id": other_org,
                "owner_id": s.owner.id,
                "id": 999,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
                "search_text": "x",
            },
        ),
        (
            "PATCH",
            s.member,
            f"/contacts/{s.contact_id}",
            {"name": "Ann B."},
            {
                "organization_id": other_org,
                "id": 999,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
        ),
        (
            "POST",
            s.member,
            "/deals",
            deal,
            {
                "organization_id": other_org,
                "owner_id": s.owner.id,
                "id": 999,
                "status": "won",
                "stage": "closed",
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
        ),
        (
            "PATCH",
            s.member,
            f"/deals/{s.deal_id}",
            {"title": "Renamed"},
            {
                "organization_id": other_org,
                "id": 999,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
        ),
        (
            "POST",
            s.member,
            "/tasks",
            task,
            {
                "is_done": True,
                "owner_id": s.owner.id,
                "id": 999,
                "organization_id": other_org,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
        ),
        (
            "PATCH",
            s.member,
            f"/tasks/{s.task_id}",
            {"title": "Renamed"},
            {
                "deal_id": s.deal_id,
                "id": 999,
                "organization_id": other_org,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
        ),
        (
            "POST",
            s.member,
            f"/deals/{s.deal_id}/activities",
            comment,
            {
                "author_id": s.owner.id,
                "id": 999,
                "deal_id": s.deal_id,
                "organization_id": other_org,
                "created_at": TIMESTAMP,
            },
        ),
    ]
    result = []
    for method, who, path, body, fields in extras:
        for name, value in fields.items():
            result.append(
                (f"{method} {path} +{name}", who, method, path, {**body, name: value}, name)
            )
    return result


async def test_server_owned_fields_are_refused_and_change_nothing(
    setup: Setup, subtests: pytest.Subtests
) -> None:
    for label, who, method, path, body, extra in cases(setup):
        with subtests.test(label):
            before = await snapshot(setup.engine)
            if who is None:
                response = await setup.api.client.request(method, setup.api.url(path), json=body)
            else:
                response = await setup.api.client.request(
                    method, setup.api.url(path), json=body, headers=who.headers()
                )
            problem = assert_problem(response, 422, "VALIDATION_ERROR")
            assert any(error["loc"][-1] == extra for error in problem["errors"]), problem
            assert await snapshot(setup.engine) == before


async def test_the_same_bodies_without_the_extra_fields_are_accepted(setup: Setup) -> None:
    """Guards the test above: each refusal is due to the extra field, not a bad base body."""
    seen: set[tuple[str, str]] = set()
    for _, who, method, path, body, extra in cases(setup):
        if (method, path) in seen:
            continue
        seen.add((method, path))
        clean = {key: value for key, value in body.items() if key != extra}
        headers = who.headers() if who is not None else {}
        response = await setup.api.client.request(
            method, setup.api.url(path), json=clean, headers=headers
        )
        assert response.status_code in (200, 201), (method, path, response.text)


async def test_comment_payload_cannot_carry_extra_fields(setup: Setup) -> None:
    before = await counts(setup.engine)
    response = await setup.member.post(
        f"/deals/{setup.deal_id}/activities",
        json={"type": "comment", "payload": {"text": "Hi", "author_id": setup.owner.id}},
    )
    assert_problem(response, 422, "VALIDATION_ERROR")
    for activity_type in ("status_changed", "stage_changed", "task_created", "system"):
        response = await setup.member.post(
            f"/deals/{setup.deal_id}/activities",
            json={"type": activity_type, "payload": {"text": "Forged"}},
        )
        assert_problem(response, 422, "VALIDATION_ERROR")
    assert await counts(setup.engine) == before


async def test_roles_cannot_be_self_granted(setup: Setup) -> None:
    """`owner` is not an assignable role, and a member cannot promote themself."""
    before = await snapshot(setup.engine)
    org = f"/organizations/{setup.owner.organization_id}"
    response = await setup.owner.patch(f"{org}/members/{setup.member.id}", json={"role": "owner"})
    assert_problem(response, 422, "VALIDATION_ERROR")
    response = await setup.owner.post(
        f"{org}/members", json={"email": setup.stranger.email, "role": "owner"}
    )
    assert_problem(response, 422, "VALIDATION_ERROR")
    response = await setup.member.patch(f"{org}/members/{setup.member.id}", json={"role": "admin"})
    assert_problem(response, 403)
    assert await snapshot(setup.engine) == before


async def test_created_records_take_owner_and_organization_from_the_request(
    setup: Setup,
) -> None:
    """The positive side: with a clean body, organization and owner come from header and caller."""
    contact = await setup.member.post("/contacts", json={"name": "Carl"})
    assert contact.status_code == 201, contact.text
    assert contact.json()["owner_id"] == setup.member.id
    assert contact.json()["organization_id"] == setup.owner.organization_id
    deal = await setup.member.post(
        "/deals", json={"contact_id": contact.json()["id"], "title": "Carl's deal"}
    )
    assert deal.status_code == 201, deal.text
    body = deal.json()
    assert (body["owner_id"], body["organization_id"]) == (
        setup.member.id,
        setup.owner.organization_id,
    )
    assert (body["status"], body["stage"]) == ("new", "qualification")
    task = await setup.member.post("/tasks", json={"deal_id": body["id"], "title": "Call Carl"})
    assert task.status_code == 201, task.text
    assert task.json()["is_done"] is False
    comment = await setup.member.post(
        f"/deals/{body['id']}/activities", json={"type": "comment", "payload": {"text": "Hi"}}
    )
    assert comment.status_code == 201, comment.text
    assert comment.json()["author_id"] == setup.member.id
