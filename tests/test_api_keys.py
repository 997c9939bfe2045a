"""API keys (CONTRACT section 11): issued once, stored as a hash, scoped to their organization,
held to the role table, revocable at once, and never able to mint more power.

The role matrix of every route with a key of each role is in `test_authz_matrix`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import ApiKey
from tests.conftest import AppFactory
from tests.support import (
    Api,
    Team,
    User,
    assert_problem,
    create_contact,
    create_deal,
    patch_deal,
    statements_sent,
)


def keys_path(user: User, organization_id: int | None = None) -> str:
    return f"/organizations/{organization_id or user.organization_id}/api-keys"


async def issue(user: User, role: str = "member", **fields: Any) -> dict[str, Any]:
    response = await user.post(
        keys_path(user), json={"name": f"{role} key", "role": role, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def with_key(
    api: Api, key: str, method: str, path: str, *, header: str = "bearer", **kwargs: Any
) -> httpx.Response:
    """A request made with an API key only (no `X-Organization-Id` unless given)."""
    headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    headers.update(kwargs.pop("headers", {}))
    return await api.client.request(method, api.url(path), headers=headers, **kwargs)


async def key_row(engine: AsyncEngine, key_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key_id})
        return dict(result.mappings().one())


async def set_key_column(engine: AsyncEngine, key_id: int, column: str, value: Any) -> None:
    """Through the model's column types: stored exactly as the app stores it."""
    async with engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values({column: value}))


async def recorded(api: Api) -> None:
    """Wait for the key uses being recorded (they are written after the request)."""
    await api.app.state.resources.api_key_usage.drain()


# --- issuing, listing, revoking -------------------------------------------------------------


async def test_a_key_is_shown_once_and_only_its_hash_is_stored(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    body = await issue(owner, "manager", expires_at="2099-01-01T00:00:00Z")
    key = body["key"]
    assert set(body) == {
        "id",
        "name",
        "role",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "key",
    }
    assert body["role"] == "manager"
    assert body["last_used_at"] is None
    assert body["expires_at"].startswith("2099-01-01T00:00:00")
    assert key.startswith(f"mcrm_{owner.organization_id}_")
    secret = key.removeprefix(f"mcrm_{owner.organization_id}_")
    assert len(secret) >= 43  # base64url: ≥ 256 bits
    assert key.startswith(body["prefix"])
    assert len(body["prefix"]) < len(key) - 40

    row = await key_row(engine, body["id"])
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    async with engine.connect() as conn:
        dump = [tuple(r) for r in await conn.execute(text("SELECT * FROM api_keys"))]
    assert secret not in repr(dump)

    listed = await owner.get(keys_path(owner))
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 1
    assert page["items"] == [{k: v for k, v in body.items() if k != "key"}]
    assert secret not in listed.text

    other = await issue(owner)
    assert other["key"] != key
    assert other["prefix"] != body["prefix"]


async def test_only_owner_and_admin_issue_keys_within_the_roles_a_key_may_have(
    api: Api, team: Team
) -> None:
    for role in ("admin", "manager", "member"):
        await issue(team.owner, role)
        await issue(team.admin, role)
    for person in (team.manager, team.member):
        response = await person.post(keys_path(person), json={"name": "k", "role": "member"})
        assert_problem(response, 403, "PERMISSION_DENIED")
    owner_key = await team.owner.post(keys_path(team.owner), json={"name": "k", "role": "owner"})
    assert_problem(owner_key, 422)
    past = await team.owner.post(
        keys_path(team.owner),
        json={"name": "k", "role": "member", "expires_at": "2001-01-01T00:00:00Z"},
    )
    assert_problem(past, 422)
    extra = await team.owner.post(
        keys_path(team.owner), json={"name": "k", "role": "member", "organization_id": 9}
    )
    assert_problem(extra, 422)


async def test_a_key_never_acts_above_its_creators_current_role(api: Api, team: Team) -> None:
    """A key's role is at most its creator's: demoting the creator demotes their keys."""
    key = (await issue(team.admin, "admin"))["key"]
    contact_id = await create_contact(team.owner)
    deal = await create_deal(team.admin, contact_id)
    await patch_deal(team.admin, deal["id"], stage="negotiation")
    others = await create_deal(team.owner, contact_id)
    deal_path = f"/deals/{deal['id']}"
    rollback = {"stage": "proposal"}
    member_path = f"/organizations/{team.owner.organization_id}/members/{team.admin.id}"
    demoted = await team.owner.patch(member_path, json={"role": "member"})
    assert demoted.status_code == 200, demoted.text
    refused = await with_key(api, key, "PATCH", deal_path, json=rollback)
    assert_problem(refused, 403, "STAGE_ROLLBACK_FORBIDDEN")
    refused = await with_key(api, key, "PATCH", f"/deals/{others['id']}", json={"title": "No"})
    assert_problem(refused, 403, "PERMISSION_DENIED")

    await team.owner.patch(member_path, json={"role": "admin"})
    allowed = await with_key(api, key, "PATCH", deal_path, json=rollback)
    assert allowed.status_code == 200, allowed.text


async def test_revoking_a_key_refuses_its_next_request(api: Api, team: Team) -> None:
    body = await issue(team.owner)
    key = body["key"]
    assert (await with_key(api, key, "GET", "/contacts")).status_code == 200
    revoked = await team.admin.delete(f"{keys_path(team.owner)}/{body['id']}")
    assert revoked.status_code == 204, revoked.text

    response = await with_key(api, key, "GET", "/contacts")
    assert_problem(response, 401, "INVALID_TOKEN")
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await team.owner.get(keys_path(team.owner))).json()["total"] == 0
    again = await team.owner.delete(f"{keys_path(team.owner)}/{body['id']}")
    assert_problem(again, 404, "API_KEY_NOT_FOUND")


async def test_an_expired_key_is_refused(api: Api, owner: User, engine: AsyncEngine) -> None:
    body = await issue(owner, expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    assert (await with_key(api, body["key"], "GET", "/deals")).status_code == 200
    await set_key_column(engine, body["id"], "expires_at", datetime.now(UTC) - timedelta(seconds=2))
    assert_problem(await with_key(api, body["key"], "GET", "/deals"), 401, "INVALID_TOKEN")
    assert_problem(await with_key(api, body["key"], "GET", "/auth/me"), 401, "INVALID_TOKEN")


async def test_a_key_stops_working_when_its_creator_leaves(api: Api, team: Team) -> None:
    key = (await issue(team.admin, "manager"))["key"]
    contact_id = await create_contact(team.owner)
    deal_id = (await create_deal(team.owner, contact_id))["id"]
    assert (await with_key(api, key, "GET", f"/deals/{deal_id}")).status_code == 200
    removed = await team.owner.delete(
        f"/organizations/{team.owner.organization_id}/members/{team.admin.id}"
    )
    assert removed.status_code == 204, removed.text
    for method, path in (("GET", f"/deals/{deal_id}"), ("GET", "/contacts"), ("POST", "/contacts")):
        body = {"json": {"name": "x"}} if method == "POST" else {}
        assert_problem(await with_key(api, key, method, path, **body), 401, "INVALID_TOKEN")


@pytest.mark.parametrize(
    "key", ["mcrm_", "mcrm_1_", "mcrm_x_abc", "mcrm_0_abc", "mcrm_1_" + "A" * 54]
)
async def test_a_malformed_or_unknown_key_is_401(api: Api, owner: User, key: str) -> None:
    for header in ("bearer", "x-api-key"):
        response = await with_key(api, key, "GET", "/contacts", header=header)
        assert_problem(response, 401)


# --- authentication and scope ---------------------------------------------------------------


async def test_a_key_implies_its_organization_and_works_in_either_header(
    api: Api, owner: User
) -> None:
    key = (await issue(owner, "member"))["key"]
    for header in ("bearer", "x-api-key"):
        created = await with_key(api, key, "POST", "/contacts", header=header, json={"name": "A"})
        assert created.status_code == 201, created.text
        assert created.json()["organization_id"] == owner.organization_id
        same = {"X-Organization-Id": str(owner.organization_id)}
        listed = await with_key(api, key, "GET", "/contacts", header=header, headers=same)
        assert listed.status_code == 200, listed.text
    # A person still names the organization: no header is still 422.
    response = await api.client.get(
        api.url("/contacts"), headers={"Authorization": f"Bearer {owner.access_token}"}
    )
    assert_problem(response, 422)
    both = await with_key(api, key, "GET", "/contacts", header="x-api-key", headers=owner.headers())
    assert_problem(both, 401)


async def test_a_key_acts_only_in_its_organization(api: Api, owner: User) -> None:
    other = await api.register(organization_name="Other")
    key = (await issue(owner, "admin"))["key"]
    foreign_deal = await create_deal(other, await create_contact(other))

    for path in ("/contacts", f"/deals/{foreign_deal['id']}", "/analytics/deals/funnel"):
        response = await with_key(
            api, key, "GET", path, headers={"X-Organization-Id": str(other.organization_id)}
        )
        assert_problem(response, 403, "NOT_A_MEMBER")
    # In its own organization, another organization's id is like one that does not exist.
    assert_problem(await with_key(api, key, "GET", f"/deals/{foreign_deal['id']}"), 404)
    path = f"/organizations/{other.organization_id}"
    assert_problem(await with_key(api, key, "GET", path), 403, "NOT_A_MEMBER")
    # Nor is a key revoked through another organization.
    other_key = await issue(other)
    response = await owner.delete(f"{keys_path(owner)}/{other_key['id']}")
    assert_problem(response, 404, "API_KEY_NOT_FOUND")
    assert (await with_key(api, other_key["key"], "GET", "/contacts")).status_code == 200


async def test_a_key_cannot_mint_power(api: Api, team: Team) -> None:
    key = (await issue(team.owner, "admin"))["key"]
    org = team.owner.organization_id
    outsider = await api.register(organization_name="Elsewhere")
    refusals = [
        ("POST", f"/organizations/{org}/api-keys", {"name": "more", "role": "member"}),
        ("GET", f"/organizations/{org}/api-keys", None),
        ("POST", f"/organizations/{org}/members", {"email": outsider.email, "role": "member"}),
        ("PATCH", f"/organizations/{org}/members/{team.member.id}", {"role": "admin"}),
        ("DELETE", f"/organizations/{org}/members/{team.member.id}", None),
        # Nor can it take its creator out of the organization.
        ("DELETE", f"/organizations/{org}/members/{team.owner.id}", None),
    ]
    for method, path, body in refusals:
        response = await with_key(api, key, method, path, json=body)
        assert_problem(response, 403, "PERMISSION_DENIED")
    for method, path in (("GET", "/auth/me"), ("GET", "/organizations/me")):
        assert_problem(await with_key(api, key, method, path), 403, "API_KEY_NOT_ALLOWED")
    response = await with_key(api, key, "POST", "/organizations", json={"name": "Mine"})
    assert_problem(response, 403, "API_KEY_NOT_ALLOWED")
    # What an admin key may do: read the organization and its members, rename it.
    assert (await with_key(api, key, "GET", f"/organizations/{org}/members")).status_code == 200
    renamed = await with_key(api, key, "PATCH", f"/organizations/{org}", json={"name": "New"})
    assert renamed.status_code == 200, renamed.text


# --- what a key does is its creator's, and names the key -------------------------------------


async def test_records_belong_to_the_creator_and_the_timeline_names_the_key(
    api: Api, team: Team
) -> None:
    body = await issue(team.admin, "member")
    key = body["key"]
    contact = await with_key(api, key, "POST", "/contacts", json={"name": "By key"})
    assert contact.json()["owner_id"] == team.admin.id
    deal = await with_key(
        api, key, "POST", "/deals", json={"contact_id": contact.json()["id"], "title": "D"}
    )
    assert deal.status_code == 201, deal.text
    assert deal.json()["owner_id"] == team.admin.id
    deal_id = deal.json()["id"]
    # A member key modifies its creator's deals (theirs), not others'.
    moved = await with_key(api, key, "PATCH", f"/deals/{deal_id}", json={"status": "in_progress"})
    assert moved.status_code == 200, moved.text
    comment = {"type": "comment", "payload": {"text": "from a key"}}
    commented = await with_key(api, key, "POST", f"/deals/{deal_id}/activities", json=comment)
    assert commented.status_code == 201, commented.text
    assert commented.json()["actor"] == {"type": "api_key", "id": body["id"]}
    assert commented.json()["author_id"] == team.admin.id
    await team.admin.post(f"/deals/{deal_id}/activities", json=comment)

    timeline = (await team.owner.get(f"/deals/{deal_id}/activities")).json()["items"]
    assert [(a["type"], a["actor"]) for a in timeline] == [
        ("comment", {"type": "user", "id": team.admin.id}),
        ("comment", {"type": "api_key", "id": body["id"]}),
        ("status_changed", {"type": "api_key", "id": body["id"]}),
    ]
    assert all("api_key_id" not in a for a in timeline)

    others = await create_deal(team.owner, contact.json()["id"])
    refused = await with_key(api, key, "PATCH", f"/deals/{others['id']}", json={"title": "No"})
    assert_problem(refused, 403, "PERMISSION_DENIED")


# --- last_used_at, rate limits, idempotency -------------------------------------------------


async def test_last_used_at_is_kept_to_the_minute_without_a_write_per_request(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    body = await issue(owner)
    key = body["key"]

    def updates(sql: str) -> bool:
        return sql.lstrip().upper().startswith("UPDATE API_KEYS")

    with statements_sent(engine, updates) as sent:
        assert (await with_key(api, key, "GET", "/contacts")).status_code == 200
        await recorded(api)
    assert len(sent) == 1
    first = (await key_row(engine, body["id"]))["last_used_at"]
    assert first is not None

    with statements_sent(engine, updates) as sent:
        for _ in range(5):
            assert (await with_key(api, key, "GET", "/contacts")).status_code == 200
            await recorded(api)
    assert sent == []
    assert (await key_row(engine, body["id"]))["last_used_at"] == first

    # Over a minute old: the next request records its use again.
    long_ago = datetime.now(UTC) - timedelta(minutes=2)
    await set_key_column(engine, body["id"], "last_used_at", long_ago)
    assert (await with_key(api, key, "GET", "/contacts")).status_code == 200
    await recorded(api)
    listed = (await owner.get(keys_path(owner))).json()["items"][0]
    assert datetime.fromisoformat(listed["last_used_at"]) > long_ago + timedelta(minutes=1)


async def test_get_deal_with_a_key_is_one_statement(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    """As with a token: the key, its creator's membership and the deal in one round trip."""
    key = (await issue(owner))["key"]
    deal = await create_deal(owner, await create_contact(owner))
    assert (await with_key(api, key, "GET", f"/deals/{deal['id']}")).status_code == 200
    await recorded(api)
    with statements_sent(engine, lambda sql: "api_keys" in sql or "deals" in sql) as sent:
        response = await with_key(api, key, "GET", f"/deals/{deal['id']}")
        await recorded(api)
    assert response.status_code == 200, response.text
    assert response.json() == deal
    assert len(sent) == 1, sent


async def test_a_key_has_its_own_rate_limit(make_api: AppFactory, database_url: str) -> None:
    api = await make_api(database_url, RATE_LIMIT_PER_MINUTE=3)
    owner = await api.register()
    key = (await issue(owner))["key"]  # the owner's 1st request
    for _ in range(2):
        assert (await owner.get("/contacts")).status_code == 200
    assert_problem(await owner.get("/contacts"), 429, "RATE_LIMITED")
    for _ in range(3):
        response = await with_key(api, key, "GET", "/contacts")
        assert response.status_code == 200, response.text
    assert '"credential";r=0' in response.headers["ratelimit"]
    assert_problem(await with_key(api, key, "GET", "/contacts"), 429, "RATE_LIMITED")


async def test_idempotency_keys_are_scoped_to_the_key_not_its_creator(
    api: Api, owner: User
) -> None:
    key = (await issue(owner))["key"]
    retry = {"Idempotency-Key": "same-key"}
    by_user = await owner.post("/contacts", json={"name": "Same"}, headers=retry)
    by_key = await with_key(api, key, "POST", "/contacts", json={"name": "Same"}, headers=retry)
    assert by_user.status_code == by_key.status_code == 201
    assert "idempotent-replayed" not in by_key.headers
    assert by_key.json()["id"] != by_user.json()["id"]
    again = await with_key(api, key, "POST", "/contacts", json={"name": "Same"}, headers=retry)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == by_key.json()


async def test_a_new_key_is_never_kept_for_a_replay(api: Api, owner: User) -> None:
    retry = {"Idempotency-Key": "issue-once"}
    body = {"name": "CI", "role": "member"}
    first = await owner.post(keys_path(owner), json=body, headers=retry)
    second = await owner.post(keys_path(owner), json=body, headers=retry)
    assert first.status_code == second.status_code == 201
    assert first.json()["key"] != second.json()["key"]


async def test_events_name_the_key_as_their_actor(api: Api, owner: User) -> None:
    """A change made with a key: its event's actor is the key; a person's change names the
    person. The record is owned by the key's creator."""
    key = await issue(owner, "manager")
    made = await with_key(api, key["key"], "POST", "/contacts", json={"name": "Made by a key"})
    assert made.status_code == 201, made.text
    assert made.json()["owner_id"] == owner.id
    await create_contact(owner, "Made by a person")
    feed = await owner.get("/events", params={"types": "contact.created"})
    assert feed.status_code == 200, feed.text
    actors = {item["data"]["object"]["name"]: item["actor"] for item in feed.json()["items"]}
    assert actors["Made by a key"] == {"type": "api_key", "id": key["id"]}
    assert actors["Made by a person"] == {"type": "user", "id": owner.id}
