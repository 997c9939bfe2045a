"""Registration, login, refresh rotation, logout, /me and login throttling, through the API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import AppFactory
from tests.support import PASSWORD, Api, User, assert_problem, count_rows

TOKEN_PAIR_KEYS = {"access_token", "refresh_token", "token_type", "expires_in"}


def new_email() -> str:
    return f"u{uuid.uuid4().hex[:12]}@example.com"


def register_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": new_email(),
        "password": PASSWORD,
        "name": "Ann",
        "organization_name": "Acme",
    }
    body.update(fields)
    return body


async def login(api: Api, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.client.post(
        api.url("/auth/login"), json={"email": email, "password": password}
    )


async def refresh(api: Api, token: str) -> httpx.Response:
    return await api.client.post(api.url("/auth/refresh"), json={"refresh_token": token})


async def logout(api: Api, token: str) -> httpx.Response:
    return await api.client.post(api.url("/auth/logout"), json={"refresh_token": token})


async def me(api: Api, access_token: str) -> httpx.Response:
    return await api.client.get(
        api.url("/auth/me"), headers={"Authorization": f"Bearer {access_token}"}
    )


def assert_unauthorized(response: httpx.Response, code: str | None = None) -> dict[str, Any]:
    body = assert_problem(response, 401, code)
    assert response.headers["www-authenticate"] == "Bearer"
    return body


def parse_timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value} has no UTC offset"
    return parsed


# --- register ----------------------------------------------------------------------------


async def test_register_creates_user_owned_organization_and_tokens(
    api: Api, engine: AsyncEngine
) -> None:
    response = await api.client.post(
        api.url("/auth/register"),
        json=register_body(
            email="Ann.Smith@Example.COM", name="  Ann Smith  ", organization_name=" Acme Ltd "
        ),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user", "organization", *TOKEN_PAIR_KEYS}
    user, organization = body["user"], body["organization"]
    assert set(user) == {"id", "email", "name", "created_at"}
    assert user["email"] == "ann.smith@example.com"
    assert user["name"] == "Ann Smith"
    parse_timestamp(user["created_at"])
    assert set(organization) == {"id", "name", "created_at", "role"}
    assert organization["name"] == "Acme Ltd"
    assert organization["role"] == "owner"
    parse_timestamp(organization["created_at"])
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    assert body["access_token"] != body["refresh_token"]

    assert await count_rows(engine, "users", "id = :id", id=user["id"]) == 1
    assert (
        await count_rows(
            engine,
            "memberships",
            "user_id = :u AND organization_id = :o AND role = 'owner'",
            u=user["id"],
            o=organization["id"],
        )
        == 1
    )
    # Stored as an Argon2id hash, never as the password itself.
    assert (
        await count_rows(
            engine, "users", "id = :id AND password_hash LIKE '$argon2id$%'", id=user["id"]
        )
        == 1
    )
    assert await count_rows(engine, "users", "password_hash = :p", p=PASSWORD) == 0

    me_response = await me(api, body["access_token"])
    assert me_response.status_code == 200, me_response.text
    assert me_response.json()["id"] == user["id"]


async def test_register_with_email_taken_in_another_case_is_409_and_creates_nothing(
    api: Api, engine: AsyncEngine
) -> None:
    first = await api.client.post(api.url("/auth/register"), json=register_body(email="ann@x.com"))
    assert first.status_code == 201, first.text
    organizations_before = await count_rows(engine, "organizations")

    second = await api.client.post(
        api.url("/auth/register"), json=register_body(email="ANN@X.Com", name="Impostor")
    )

    assert_problem(second, 409, "EMAIL_TAKEN")
    assert await count_rows(engine, "users", "lower(email) = 'ann@x.com'") == 1
    assert await count_rows(engine, "users", "name = 'Impostor'") == 0
    assert await count_rows(engine, "organizations") == organizations_before
    assert await count_rows(engine, "memberships") == 1


async def test_concurrent_registrations_of_one_email_create_one_account(
    api: Api, engine: AsyncEngine
) -> None:
    responses = await asyncio.gather(
        *(
            api.client.post(api.url("/auth/register"), json=register_body(email=email))
            for email in ("race@example.com", "RACE@example.com", "Race@Example.com")
        )
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409], [response.text for response in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "EMAIL_TAKEN")
    assert await count_rows(engine, "users") == 1
    assert await count_rows(engine, "organizations") == 1


INVALID_REGISTRATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "password-7-chars": ({"password": "x" * 7}, "password"),
    "password-129-chars": ({"password": "x" * 129}, "password"),
    "password-not-a-string": ({"password": 12345678}, "password"),
    "empty-name": ({"name": ""}, "name"),
    "name-too-long": ({"name": "x" * 201}, "name"),
    "empty-org-name": ({"organization_name": ""}, "organization_name"),
    "bad-email": ({"email": "not-an-email"}, "email"),
    "null-email": ({"email": None}, "email"),
    "unknown-field": ({"is_admin": True}, "is_admin"),
    "unknown-field-role": ({"role": "owner"}, "role"),
    "blank-name": ({"name": "   "}, "name"),
    "blank-org-name": ({"organization_name": " \t "}, "organization_name"),
}


async def test_register_rejects_invalid_input_without_creating_anything(
    api: Api, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for case, (fields, field) in INVALID_REGISTRATIONS.items():
        with subtests.test(case):
            response = await api.client.post(
                api.url("/auth/register"), json=register_body(**fields)
            )
            body = assert_problem(response, 422, "VALIDATION_ERROR")
            assert ["body", field] in [issue["loc"][:2] for issue in body["errors"]]
            assert await count_rows(engine, "users") == 0
            assert await count_rows(engine, "organizations") == 0


async def test_register_requires_every_field(api: Api, engine: AsyncEngine) -> None:
    response = await api.client.post(api.url("/auth/register"), json={})

    body = assert_problem(response, 422, "VALIDATION_ERROR")
    missing = {issue["loc"][-1] for issue in body["errors"] if issue["type"] == "missing"}
    assert missing == {"email", "password", "name", "organization_name"}
    assert await count_rows(engine, "users") == 0


@pytest.mark.parametrize("length", [8, 128])
async def test_password_length_bounds_are_inclusive(api: Api, length: int) -> None:
    password = "p" * length
    email = new_email()
    response = await api.client.post(
        api.url("/auth/register"), json=register_body(email=email, password=password)
    )
    assert response.status_code == 201, response.text

    assert (await login(api, email, password)).status_code == 200


# --- login -------------------------------------------------------------------------------


async def test_login_returns_a_working_token_pair(api: Api, owner: User) -> None:
    response = await login(api, owner.email.upper())

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TOKEN_PAIR_KEYS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    me_response = await me(api, body["access_token"])
    assert me_response.status_code == 200
    assert me_response.json()["id"] == owner.id
    assert (await refresh(api, body["refresh_token"])).status_code == 200


async def test_wrong_password_and_unknown_email_answer_the_same_401(api: Api, owner: User) -> None:
    wrong_password = await login(api, owner.email, "WrongPassword123")
    unknown_email = await login(api, "nobody@example.com", "WrongPassword123")

    first = assert_unauthorized(wrong_password, "INVALID_CREDENTIALS")
    second = assert_unauthorized(unknown_email, "INVALID_CREDENTIALS")
    first.pop("request_id")
    second.pop("request_id")
    assert first == second


async def test_unknown_email_costs_a_password_verification_too(
    api: Api, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipping the hash for unknown emails would let response times enumerate accounts."""
    passwords = api.app.state.resources.passwords
    verified: list[str | None] = []
    real_verify = passwords.verify

    async def spy(password: str, password_hash: str | None) -> bool:
        verified.append(password_hash)
        return bool(await real_verify(password, password_hash))

    monkeypatch.setattr(passwords, "verify", spy)

    assert_unauthorized(await login(api, "nobody@example.com", "whatever1"), "INVALID_CREDENTIALS")
    assert_unauthorized(await login(api, owner.email, "whatever1"), "INVALID_CREDENTIALS")

    assert len(verified) == 2
    assert verified[0] is None
    assert verified[1] is not None


async def test_login_rejects_malformed_bodies(api: Api, subtests: pytest.Subtests) -> None:
    cases: dict[str, dict[str, Any]] = {
        "no-password": {"email": "a@example.com"},
        "no-email": {"password": PASSWORD},
        "empty-password": {"email": "a@example.com", "password": ""},
        "password-129-chars": {"email": "a@example.com", "password": "x" * 129},
        "unknown-field": {"email": "a@example.com", "password": PASSWORD, "remember": True},
    }
    for case, body in cases.items():
        with subtests.test(case):
            response = await api.client.post(api.url("/auth/login"), json=body)
            assert_problem(response, 422, "VALIDATION_ERROR")


# --- me ----------------------------------------------------------------------------------


async def test_me_lists_every_organization_of_the_user(api: Api, owner: User) -> None:
    second = await owner.post("/organizations", json={"name": "Second"})
    assert second.status_code == 201, second.text
    other_owner = await api.register(organization_name="Elsewhere")
    unrelated = await api.register(organization_name="Not mine")
    added = await other_owner.post(
        f"/organizations/{other_owner.organization_id}/members",
        json={"email": owner.email, "role": "member"},
    )
    assert added.status_code == 201, added.text

    response = await me(api, owner.access_token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "email", "name", "created_at", "organizations"}
    assert body["id"] == owner.id
    assert body["email"] == owner.email
    parse_timestamp(body["created_at"])
    organizations = sorted(body["organizations"], key=lambda org: org["id"])
    assert organizations == [
        {"id": owner.organization_id, "name": "Acme", "role": "owner"},
        {"id": second.json()["id"], "name": "Second", "role": "owner"},
        {"id": other_owner.organization_id, "name": "Elsewhere", "role": "member"},
    ]
    assert unrelated.organization_id not in {org["id"] for org in organizations}


async def test_me_without_token_is_401(api: Api) -> None:
    assert_unauthorized(await api.client.get(api.url("/auth/me")))


# --- refresh rotation --------------------------------------------------------------------


async def test_refresh_rotates_the_pair(api: Api, owner: User) -> None:
    response = await refresh(api, owner.refresh_token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TOKEN_PAIR_KEYS
    assert body["refresh_token"] != owner.refresh_token
    assert (await me(api, body["access_token"])).json()["id"] == owner.id
    # The new refresh token works in turn.
    assert (await refresh(api, body["refresh_token"])).status_code == 200


async def test_reused_refresh_token_revokes_its_whole_session(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    other_session = (await login(api, owner.email)).json()["refresh_token"]
    rotated = (await refresh(api, owner.refresh_token)).json()["refresh_token"]

    reused = await refresh(api, owner.refresh_token)

    assert_unauthorized(reused, "REFRESH_TOKEN_REUSED")
    # The newer token descended from the same login is dead too...
    assert_unauthorized(await refresh(api, rotated))
    assert (
        await count_rows(
            engine, "auth_sessions", "user_id = :u AND revoked_at IS NOT NULL", u=owner.id
        )
        == 1
    )
    # ...but another login of the same user is untouched.
    assert (await refresh(api, other_session)).status_code == 200


async def test_concurrent_use_of_one_refresh_token_succeeds_at_most_once(
    api: Api, owner: User
) -> None:
    first, second = await asyncio.gather(
        refresh(api, owner.refresh_token), refresh(api, owner.refresh_token)
    )

    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 401], (first.text, second.text)


async def test_access_token_is_not_a_refresh_token(api: Api, owner: User) -> None:
    assert_unauthorized(await refresh(api, owner.access_token))
    assert_unauthorized(await logout(api, owner.access_token))
    # The refused attempts did not spend or revoke anything.
    assert (await refresh(api, owner.refresh_token)).status_code == 200


async def test_refresh_with_a_malformed_token_is_401(api: Api, subtests: pytest.Subtests) -> None:
    for token in ("garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA"):
        with subtests.test(token):
            assert_unauthorized(await refresh(api, token), "INVALID_TOKEN")


async def test_refresh_rejects_malformed_bodies(api: Api, subtests: pytest.Subtests) -> None:
    for body in (
        {},
        {"refresh_token": ""},
        {"refresh_token": "x", "extra": 1},
        {"refresh_token": 5},
    ):
        with subtests.test(str(body)):
            response = await api.client.post(api.url("/auth/refresh"), json=body)
            assert_problem(response, 422, "VALIDATION_ERROR")


# --- logout ------------------------------------------------------------------------------


async def test_logout_revokes_the_session(api: Api, owner: User, engine: AsyncEngine) -> None:
    other_session = (await login(api, owner.email)).json()["refresh_token"]
    rotated = (await refresh(api, owner.refresh_token)).json()["refresh_token"]

    response = await logout(api, rotated)

    assert response.status_code == 204
    assert response.content == b""
    assert (
        await count_rows(
            engine, "auth_sessions", "user_id = :u AND revoked_at IS NOT NULL", u=owner.id
        )
        == 1
    )
    assert_unauthorized(await refresh(api, rotated))
    assert_unauthorized(await logout(api, rotated))
    assert (await refresh(api, other_session)).status_code == 200


async def test_logout_with_a_reused_token_is_401_and_revokes_the_session(
    api: Api, owner: User
) -> None:
    rotated = (await refresh(api, owner.refresh_token)).json()["refresh_token"]

    assert_unauthorized(await logout(api, owner.refresh_token), "REFRESH_TOKEN_REUSED")
    assert_unauthorized(await refresh(api, rotated))


# --- failed-login throttling -------------------------------------------------------------


def retry_after(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit(), value
    return int(value)


async def test_ten_failed_logins_are_throttled_even_for_the_right_password(
    api: Api, owner: User
) -> None:
    bystander = await api.register()
    for _ in range(10):
        assert_unauthorized(await login(api, owner.email, "WrongPassword1"), "INVALID_CREDENTIALS")

    throttled = await login(api, owner.email, "WrongPassword1")

    assert_problem(throttled, 429, "LOGIN_THROTTLED")
    assert 0 < retry_after(throttled) <= 15 * 60
    right_password = await login(api, owner.email)
    assert_problem(right_password, 429, "LOGIN_THROTTLED")
    assert retry_after(right_password) > 0
    # The key is the email, whatever its case.
    assert_problem(await login(api, owner.email.upper()), 429, "LOGIN_THROTTLED")
    # Other accounts are unaffected.
    assert (await login(api, bystander.email)).status_code == 200


async def test_unknown_emails_are_throttled_like_known_ones(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(database_url, LOGIN_THROTTLE_MAX_ATTEMPTS=3)
    for _ in range(3):
        assert_unauthorized(await login(api, "ghost@example.com", "Whatever123"))

    assert_problem(await login(api, "ghost@example.com", "Whatever123"), 429, "LOGIN_THROTTLED")


async def test_successful_login_clears_earlier_failures(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(database_url, LOGIN_THROTTLE_MAX_ATTEMPTS=3)
    user = await api.register()
    for _ in range(2):
        assert_unauthorized(await login(api, user.email, "WrongPassword1"))
    assert (await login(api, user.email)).status_code == 200

    for _ in range(2):
        assert_unauthorized(await login(api, user.email, "WrongPassword1"))
    assert (await login(api, user.email)).status_code == 200


async def test_throttle_lifts_when_the_window_has_passed(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(
        database_url, LOGIN_THROTTLE_MAX_ATTEMPTS=2, LOGIN_THROTTLE_WINDOW_SECONDS=1
    )
    user = await api.register()
    for _ in range(2):
        assert_unauthorized(await login(api, user.email, "WrongPassword1"))
    throttled = await login(api, user.email)
    assert_problem(throttled, 429, "LOGIN_THROTTLED")
    assert retry_after(throttled) == 1

    await asyncio.sleep(1.1)

    assert (await login(api, user.email)).status_code == 200


@pytest.mark.redis
async def test_redis_throttle_is_shared_by_every_instance(
    make_api: AppFactory, database_url: str, redis_test_url: str
) -> None:
    redis = Redis.from_url(redis_test_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
    first = await make_api(database_url, LOGIN_THROTTLE_MAX_ATTEMPTS=3, REDIS_URL=redis_test_url)
    second = await make_api(database_url, LOGIN_THROTTLE_MAX_ATTEMPTS=3, REDIS_URL=redis_test_url)
    user = await first.register()
    bystander = await first.register()
    for instance in (first, second, first):
        assert_unauthorized(await login(instance, user.email, "WrongPassword1"))

    for instance in (first, second):
        throttled = await login(instance, user.email)
        assert_problem(throttled, 429, "LOGIN_THROTTLED")
        assert retry_after(throttled) > 0
    assert (await login(second, bystander.email)).status_code == 200
