"""Organizations and members: tenancy, who may rename and manage whom, the owner's protection."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, Team, User, assert_problem, count_rows

ROLES = ("owner", "admin", "manager", "member")
ASSIGNABLE_ROLES = ("admin", "manager", "member")
ORGANIZATION_KEYS = {"id", "name", "created_at", "role"}
MEMBER_KEYS = {"user_id", "email", "name", "role", "joined_at"}


async def role_in(engine: AsyncEngine, organization_id: int, user_id: int) -> str | None:
    async with engine.connect() as conn:
        role = await conn.scalar(
            text("SELECT role FROM memberships WHERE organization_id = :o AND user_id = :u"),
            {"o": organization_id, "u": user_id},
        )
    return None if role is None else str(role)


async def organization_name(engine: AsyncEngine, organization_id: int) -> str:
    async with engine.connect() as conn:
        name = await conn.scalar(
            text("SELECT name FROM organizations WHERE id = :id"), {"id": organization_id}
        )
    return str(name)


def assert_timestamp(value: str) -> None:
    assert datetime.fromisoformat(value).utcoffset() is not None, value


# --- the caller's organizations ----------------------------------------------------------


async def test_my_organizations_lists_each_with_my_role(api: Api, owner: User) -> None:
    other = await api.register(organization_name="Beta")
    unrelated = await api.register(organization_name="Gamma")
    added = await other.post(
        f"/organizations/{other.organization_id}/members",
        json={"email": owner.email, "role": "manager"},
    )
    assert added.status_code == 201, added.text

    response = await owner.get("/organizations/me")

    assert response.status_code == 200, response.text
    organizations = response.json()
    assert all(set(org) == ORGANIZATION_KEYS for org in organizations)
    for org in organizations:
        assert_timestamp(org["created_at"])
    assert sorted((org["id"], org["name"], org["role"]) for org in organizations) == sorted(
        [(owner.organization_id, "Acme", "owner"), (other.organization_id, "Beta", "manager")]
    )
    assert unrelated.organization_id not in {org["id"] for org in organizations}


async def test_create_organization_makes_the_caller_its_owner(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    response = await owner.post("/organizations", json={"name": "  Beta Corp  "})

    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == ORGANIZATION_KEYS
    assert created["name"] == "Beta Corp"
    assert created["role"] == "owner"
    assert_timestamp(created["created_at"])
    assert await role_in(engine, created["id"], owner.id) == "owner"
    assert await count_rows(engine, "memberships", "organization_id = :o", o=created["id"]) == 1
    read = await owner.get(f"/organizations/{created['id']}")
    assert read.status_code == 200
    assert read.json() == created
    listed = (await owner.get("/organizations/me")).json()
    assert created["id"] in {org["id"] for org in listed}


INVALID_NAMES: dict[str, dict[str, Any]] = {
    "missing-name": {},
    "empty-name": {"name": ""},
    "name-too-long": {"name": "x" * 201},
    "name-not-a-string": {"name": 5},
    "unknown-field": {"name": "Beta", "owner_id": 1},
    "blank-name": {"name": " \t "},
}


async def test_create_organization_rejects_invalid_bodies(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for case, body in INVALID_NAMES.items():
        with subtests.test(case):
            response = await owner.post("/organizations", json=body)
            assert_problem(response, 422, "VALIDATION_ERROR")

    assert await count_rows(engine, "organizations") == 1
    assert await count_rows(engine, "memberships") == 1


async def test_organization_endpoints_without_a_token_are_401(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    org = owner.organization_id
    requests = [
        ("GET", "/organizations/me", None),
        ("POST", "/organizations", {"name": "Beta"}),
        ("GET", f"/organizations/{org}", None),
        ("PATCH", f"/organizations/{org}", {"name": "Hijacked"}),
        ("GET", f"/organizations/{org}/members", None),
        ("POST", f"/organizations/{org}/members", {"email": owner.email, "role": "admin"}),
        ("PATCH", f"/organizations/{org}/members/{owner.id}", {"role": "member"}),
        ("DELETE", f"/organizations/{org}/members/{owner.id}", None),
    ]
    for method, path, body in requests:
        response = await api.client.request(method, api.url(path), json=body)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"

    assert await count_rows(engine, "organizations") == 1
    assert await organization_name(engine, org) == "Acme"
    assert await role_in(engine, org, owner.id) == "owner"


# --- tenancy -----------------------------------------------------------------------------


def tenant_requests(organization_id: int, target_user_id: int) -> list[tuple[str, str, Any]]:
    base = f"/organizations/{organization_id}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"name": "Hijacked"}),
        ("GET", f"{base}/members", None),
        ("POST", f"{base}/members", {"email": "x@example.com", "role": "member"}),
        ("PATCH", f"{base}/members/{target_user_id}", {"role": "manager"}),
        ("DELETE", f"{base}/members/{target_user_id}", None),
    ]


async def send(user: User, method: str, path: str, body: Any) -> httpx.Response:
    return await user.api.client.request(
        method, user.api.url(path), json=body, headers=user.headers()
    )


async def test_non_member_is_refused_everywhere_and_changes_nothing(
    api: Api, team: Team, engine: AsyncEngine
) -> None:
    outsider = await api.register(organization_name="Elsewhere")
    org = team.owner.organization_id
    memberships_before = await count_rows(engine, "memberships")

    for method, path, body in tenant_requests(org, team.member.id):
        assert_problem(await send(outsider, method, path, body), 403, "NOT_A_MEMBER")

    assert await organization_name(engine, org) == "Acme"
    assert await count_rows(engine, "memberships") == memberships_before
    assert await role_in(engine, org, team.member.id) == "member"


async def test_missing_organization_answers_like_one_you_do_not_belong_to(
    api: Api, owner: User
) -> None:
    stranger = await api.register(organization_name="Elsewhere")
    missing = owner.organization_id + stranger.organization_id + 1000

    for (method, path, body), (_, foreign_path, _) in zip(
        tenant_requests(missing, owner.id),
        tenant_requests(stranger.organization_id, stranger.id),
        strict=True,
    ):
        not_found = assert_problem(await send(owner, method, path, body), 403, "NOT_A_MEMBER")
        foreign = assert_problem(await send(owner, method, foreign_path, body), 403)
        not_found.pop("request_id")
        foreign.pop("request_id")
        assert not_found == foreign


async def test_malformed_organization_id_is_422(owner: User, subtests: pytest.Subtests) -> None:
    for organization_id in ["abc", "0", "-1", str(2**63), "1.5"]:
        with subtests.test(organization_id):
            response = await owner.get(f"/organizations/{organization_id}")
            body = assert_problem(response, 422, "VALIDATION_ERROR")
            assert body["errors"][0]["loc"] == ["path", "organization_id"]


# --- read and rename ---------------------------------------------------------------------


async def test_every_member_reads_the_organization_with_their_role(
    team: Team, subtests: pytest.Subtests
) -> None:
    for role in ROLES:
        with subtests.test(role):
            response = await team.by_role(role).get(f"/organizations/{team.owner.organization_id}")
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == ORGANIZATION_KEYS
            assert body["id"] == team.owner.organization_id
            assert body["name"] == "Acme"
            assert body["role"] == role


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_owner_and_admin_rename_the_organization(
    team: Team, engine: AsyncEngine, role: str
) -> None:
    org = team.owner.organization_id

    response = await team.by_role(role).patch(f"/organizations/{org}", json={"name": " Renamed "})

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Renamed"
    assert response.json()["role"] == role
    assert await organization_name(engine, org) == "Renamed"
    read = await team.member.get(f"/organizations/{org}")
    assert read.json()["name"] == "Renamed"


async def test_manager_and_member_cannot_rename(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    org = team.owner.organization_id

    for role in ("manager", "member"):
        with subtests.test(role):
            response = await team.by_role(role).patch(
                f"/organizations/{org}", json={"name": "Renamed"}
            )
            assert_problem(response, 403, "PERMISSION_DENIED")
            assert await organization_name(engine, org) == "Acme"


async def test_rename_rejects_invalid_bodies(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    org = owner.organization_id

    for case, body in INVALID_NAMES.items():
        if case == "missing-name":  # a partial update may leave the name out
            continue
        with subtests.test(case):
            response = await owner.patch(f"/organizations/{org}", json=body)
            assert_problem(response, 422, "VALIDATION_ERROR")
            assert await organization_name(engine, org) == "Acme"


async def test_empty_patch_changes_nothing(owner: User, engine: AsyncEngine) -> None:
    response = await owner.patch(f"/organizations/{owner.organization_id}", json={})

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Acme"
    assert await organization_name(engine, owner.organization_id) == "Acme"


# --- members: list and add ---------------------------------------------------------------


async def test_every_member_lists_the_members(team: Team) -> None:
    org = team.owner.organization_id
    expected = {
        team.owner.id: ("owner", team.owner.email),
        team.admin.id: ("admin", team.admin.email),
        team.manager.id: ("manager", team.manager.email),
        team.member.id: ("member", team.member.email),
    }

    for user in (team.owner, team.member):
        response = await user.get(f"/organizations/{org}/members")
        assert response.status_code == 200, response.text
        members = response.json()
        assert all(set(member) == MEMBER_KEYS for member in members)
        for member in members:
            assert_timestamp(member["joined_at"])
        assert {m["user_id"]: (m["role"], m["email"]) for m in members} == expected


@pytest.mark.parametrize(
    ("caller", "role"),
    [
        ("owner", "admin"),
        ("owner", "manager"),
        ("owner", "member"),
        ("admin", "manager"),
        ("admin", "member"),
    ],
)
async def test_owner_and_admin_add_members(
    api: Api, team: Team, engine: AsyncEngine, caller: str, role: str
) -> None:
    newcomer = await api.register(name="Newcomer", organization_name="Own")
    org = team.owner.organization_id

    response = await team.by_role(caller).post(
        f"/organizations/{org}/members", json={"email": newcomer.email.upper(), "role": role}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == MEMBER_KEYS
    assert body["user_id"] == newcomer.id
    assert body["email"] == newcomer.email
    assert body["name"] == "Newcomer"
    assert body["role"] == role
    assert_timestamp(body["joined_at"])
    assert await role_in(engine, org, newcomer.id) == role
    # The new member is in at once, with that role.
    read = await newcomer.api.client.get(
        api.url(f"/organizations/{org}"), headers=newcomer.headers(org)
    )
    assert read.json()["role"] == role


async def test_adding_members_beyond_your_role_is_403(
    api: Api, team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    newcomer = await api.register(organization_name="Own")
    org = team.owner.organization_id
    refused = [("admin", "admin")] + [
        (caller, role) for caller in ("manager", "member") for role in ASSIGNABLE_ROLES
    ]

    for caller, role in refused:
        with subtests.test(f"{caller} adds {role}"):
            response = await team.by_role(caller).post(
                f"/organizations/{org}/members", json={"email": newcomer.email, "role": role}
            )
            assert_problem(response, 403, "PERMISSION_DENIED")
            assert await role_in(engine, org, newcomer.id) is None


async def test_adding_an_unknown_email_is_404(team: Team, engine: AsyncEngine) -> None:
    org = team.owner.organization_id
    before = await count_rows(engine, "memberships")

    response = await team.owner.post(
        f"/organizations/{org}/members", json={"email": "nobody@example.com", "role": "member"}
    )

    assert_problem(response, 404, "USER_NOT_FOUND")
    # Someone who may not add members learns nothing about which emails exist.
    forbidden = await team.manager.post(
        f"/organizations/{org}/members", json={"email": "nobody@example.com", "role": "member"}
    )
    assert_problem(forbidden, 403)
    assert await count_rows(engine, "memberships") == before


@pytest.mark.parametrize("who", ["member", "owner"])
async def test_adding_an_existing_member_is_409(team: Team, engine: AsyncEngine, who: str) -> None:
    org = team.owner.organization_id
    target = team.by_role(who)
    before = await count_rows(engine, "memberships")

    response = await team.owner.post(
        f"/organizations/{org}/members", json={"email": target.email, "role": "admin"}
    )

    assert_problem(response, 409, "ALREADY_MEMBER")
    assert await count_rows(engine, "memberships") == before
    assert await role_in(engine, org, target.id) == who


async def test_concurrent_adds_of_one_user_make_one_membership(
    api: Api, team: Team, engine: AsyncEngine
) -> None:
    newcomer = await api.register(organization_name="Own")
    org = team.owner.organization_id

    responses = await asyncio.gather(
        team.owner.post(
            f"/organizations/{org}/members", json={"email": newcomer.email, "role": "member"}
        ),
        team.admin.post(
            f"/organizations/{org}/members", json={"email": newcomer.email, "role": "manager"}
        ),
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409], [response.text for response in responses]
    conflict = next(response for response in responses if response.status_code == 409)
    assert_problem(conflict, 409, "ALREADY_MEMBER")
    winner = next(response for response in responses if response.status_code == 201)
    assert await role_in(engine, org, newcomer.id) == winner.json()["role"]


async def test_add_member_rejects_invalid_bodies(
    api: Api, owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    newcomer = await api.register(organization_name="Own")
    cases: dict[str, dict[str, Any]] = {
        "role-owner": {"role": "owner"},
        "role-upper-case": {"role": "ADMIN"},
        "role-unknown": {"role": "superuser"},
        "role-null": {"role": None},
        "unknown-field": {"role": "member", "organization_id": 1},
        "bad-email": {"email": "not-an-email"},
    }

    for case, changes in cases.items():
        with subtests.test(case):
            payload = {"email": newcomer.email, "role": "member"} | changes
            response = await owner.post(
                f"/organizations/{owner.organization_id}/members", json=payload
            )
            assert_problem(response, 422, "VALIDATION_ERROR")
            assert await role_in(engine, owner.organization_id, newcomer.id) is None


# --- members: change role ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "target", "role"),
    [
        ("owner", "member", "manager"),
        ("owner", "member", "admin"),
        ("owner", "admin", "member"),
        ("admin", "manager", "member"),
        ("admin", "member", "manager"),
    ],
)
async def test_owner_and_admin_change_roles_within_their_reach(
    team: Team, engine: AsyncEngine, caller: str, target: str, role: str
) -> None:
    org = team.owner.organization_id
    target_user = team.by_role(target)

    response = await team.by_role(caller).patch(
        f"/organizations/{org}/members/{target_user.id}", json={"role": role}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == MEMBER_KEYS
    assert (body["user_id"], body["role"]) == (target_user.id, role)
    assert await role_in(engine, org, target_user.id) == role
    # Membership is read per request: the new role applies to the very next call.
    read = await target_user.get(f"/organizations/{org}")
    assert read.json()["role"] == role


async def test_role_changes_beyond_your_reach_are_refused(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    org = team.owner.organization_id
    refused = [
        # Nobody changes the owner's role, not even the owner.
        *[("owner", "owner", role, 409, "OWNER_IMMUTABLE") for role in ASSIGNABLE_ROLES],
        ("admin", "owner", "member", 409, "OWNER_IMMUTABLE"),
        # Only the owner grants admin, and only the owner manages admins.
        ("admin", "member", "admin", 403, "PERMISSION_DENIED"),
        ("admin", "manager", "admin", 403, "PERMISSION_DENIED"),
        ("admin", "admin", "member", 403, "PERMISSION_DENIED"),
        # Managers and members manage nobody.
        ("manager", "member", "manager", 403, "PERMISSION_DENIED"),
        ("manager", "manager", "member", 403, "PERMISSION_DENIED"),
        ("member", "manager", "member", 403, "PERMISSION_DENIED"),
        ("member", "member", "admin", 403, "PERMISSION_DENIED"),
    ]

    for caller, target, role, status, code in refused:
        with subtests.test(f"{caller} makes {target} {role}"):
            target_user = team.by_role(target)
            response = await team.by_role(caller).patch(
                f"/organizations/{org}/members/{target_user.id}", json={"role": role}
            )
            assert_problem(response, status, code)
            assert await role_in(engine, org, target_user.id) == target


async def test_admin_cannot_touch_another_admin(api: Api, team: Team, engine: AsyncEngine) -> None:
    org = team.owner.organization_id
    second_admin = await api.member_of(team.owner, "admin")

    demote = await team.admin.patch(
        f"/organizations/{org}/members/{second_admin.id}", json={"role": "member"}
    )
    remove = await team.admin.delete(f"/organizations/{org}/members/{second_admin.id}")

    assert_problem(demote, 403, "PERMISSION_DENIED")
    assert_problem(remove, 403, "PERMISSION_DENIED")
    assert await role_in(engine, org, second_admin.id) == "admin"


async def test_changing_the_role_of_a_non_member_is_404(api: Api, team: Team) -> None:
    org = team.owner.organization_id
    outsider = await api.register(organization_name="Elsewhere")

    for user_id in (outsider.id, outsider.id + 1000):
        response = await team.owner.patch(
            f"/organizations/{org}/members/{user_id}", json={"role": "member"}
        )
        assert_problem(response, 404, "MEMBER_NOT_FOUND")
    assert_problem(await outsider.get(f"/organizations/{org}"), 403, "NOT_A_MEMBER")


async def test_change_role_rejects_invalid_bodies(
    owner: User, api: Api, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    org = owner.organization_id
    member = await api.member_of(owner, "member")
    bodies = [{"role": "owner"}, {"role": "boss"}, {"role": None}, {}, {"role": "admin", "x": 1}]

    for body in bodies:
        with subtests.test(str(body)):
            response = await owner.patch(f"/organizations/{org}/members/{member.id}", json=body)
            assert_problem(response, 422, "VALIDATION_ERROR")
            assert await role_in(engine, org, member.id) == "member"
    for member_id in ("0", "abc", str(2**63)):
        with subtests.test(f"member id {member_id}"):
            response = await owner.patch(
                f"/organizations/{org}/members/{member_id}", json={"role": "member"}
            )
            assert_problem(response, 422, "VALIDATION_ERROR")


# --- members: remove ---------------------------------------------------------------------


async def test_the_owner_cannot_be_removed(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    org = team.owner.organization_id

    for caller in ("owner", "admin"):
        with subtests.test(caller):
            response = await team.by_role(caller).delete(
                f"/organizations/{org}/members/{team.owner.id}"
            )
            assert_problem(response, 409, "OWNER_IMMUTABLE")
            assert await role_in(engine, org, team.owner.id) == "owner"


@pytest.mark.parametrize("role", ["admin", "manager", "member"])
async def test_any_member_may_leave_and_loses_access_at_once(
    team: Team, engine: AsyncEngine, role: str
) -> None:
    org = team.owner.organization_id
    leaver = team.by_role(role)

    response = await leaver.delete(f"/organizations/{org}/members/{leaver.id}")

    assert response.status_code == 204
    assert response.content == b""
    assert await role_in(engine, org, leaver.id) is None
    # Same access token, very next request: no longer a member.
    assert_problem(await leaver.get(f"/organizations/{org}"), 403, "NOT_A_MEMBER")
    assert_problem(await leaver.get(f"/organizations/{org}/members"), 403, "NOT_A_MEMBER")
    mine = (await leaver.get("/organizations/me")).json()
    assert org not in {o["id"] for o in mine}
    members = (await team.owner.get(f"/organizations/{org}/members")).json()
    assert leaver.id not in {m["user_id"] for m in members}


@pytest.mark.parametrize(
    ("caller", "target"),
    [("owner", "admin"), ("owner", "member"), ("admin", "manager"), ("admin", "member")],
)
async def test_owner_and_admin_remove_members_with_immediate_effect(
    team: Team, engine: AsyncEngine, caller: str, target: str
) -> None:
    org = team.owner.organization_id
    removed = team.by_role(target)

    response = await team.by_role(caller).delete(f"/organizations/{org}/members/{removed.id}")

    assert response.status_code == 204
    assert await role_in(engine, org, removed.id) is None
    assert_problem(await removed.get(f"/organizations/{org}"), 403, "NOT_A_MEMBER")
    rename = await removed.patch(f"/organizations/{org}", json={"name": "Revenge"})
    assert_problem(rename, 403, "NOT_A_MEMBER")
    assert await organization_name(engine, org) == "Acme"


async def test_removing_someone_else_without_the_right_is_403(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    org = team.owner.organization_id
    refused = [
        ("member", "manager"),
        ("member", "admin"),
        ("manager", "member"),
        ("manager", "admin"),
    ]

    for caller, target in refused:
        with subtests.test(f"{caller} removes {target}"):
            target_user = team.by_role(target)
            response = await team.by_role(caller).delete(
                f"/organizations/{org}/members/{target_user.id}"
            )
            assert_problem(response, 403, "PERMISSION_DENIED")
            assert await role_in(engine, org, target_user.id) == target


async def test_removing_a_non_member_is_404(api: Api, team: Team, engine: AsyncEngine) -> None:
    org = team.owner.organization_id
    outsider = await api.register(organization_name="Elsewhere")
    before = await count_rows(engine, "memberships")

    response = await team.owner.delete(f"/organizations/{org}/members/{outsider.id}")

    assert_problem(response, 404, "MEMBER_NOT_FOUND")
    assert await count_rows(engine, "memberships") == before
    # The outsider's own organization membership is untouched.
    assert await role_in(engine, outsider.organization_id, outsider.id) == "owner"


async def test_a_removed_member_can_be_added_again(team: Team, engine: AsyncEngine) -> None:
    org = team.owner.organization_id
    removed = await team.owner.delete(f"/organizations/{org}/members/{team.member.id}")
    assert removed.status_code == 204

    response = await team.owner.post(
        f"/organizations/{org}/members", json={"email": team.member.email, "role": "manager"}
    )

    assert response.status_code == 201, response.text
    assert await role_in(engine, org, team.member.id) == "manager"
    assert (await team.member.get(f"/organizations/{org}")).json()["role"] == "manager"
