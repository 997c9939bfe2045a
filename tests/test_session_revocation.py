"""A revoked login session's access tokens stop working on the next request, everywhere.

Logout, and a refresh token presented twice, revoke the login session. Its access tokens are
then refused (401) on the next request to any route, in every worker and instance on the same
database, even where the token was already verified and remembered (`TokenCodec`), while the
user's other sessions keep working."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.security import TokenType
from tests.conftest import AppFactory
from tests.support import Api, User, assert_problem, create_contact, create_deal


async def post_token(api: Api, path: str, refresh_token: str) -> httpx.Response:
    return await api.client.post(api.url(path), json={"refresh_token": refresh_token})


async def login(api: Api, user: User) -> User:
    """A second login session of `user`."""
    response = await api.client.post(
        api.url("/auth/login"), json={"email": user.email, "password": "StrongPassword123"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return User(
        api=api,
        id=user.id,
        email=user.email,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        organization_id=user.organization_id,
    )


def as_user(user: User, api: Api, access_token: str | None = None) -> User:
    """`user` talking to `api` (another instance), optionally with another access token."""
    return User(
        api=api,
        id=user.id,
        email=user.email,
        access_token=access_token or user.access_token,
        refresh_token=user.refresh_token,
        organization_id=user.organization_id,
    )


def requests_of(user: User, deal_id: int) -> dict[str, Any]:
    """Every kind of authenticated request: tenant routes resolved by `OrgContext`, by the
    one-statement deal read, by the analytics statement, by the organization path, and routes
    without a tenant (reads and a write)."""
    org = user.organization_id
    return {
        "GET /contacts": lambda: user.get("/contacts"),
        "GET /deals": lambda: user.get("/deals"),
        "GET /deals/{id}": lambda: user.get(f"/deals/{deal_id}"),
        "PATCH /deals/{id}": lambda: user.patch(f"/deals/{deal_id}", json={"title": "Renamed"}),
        "GET /analytics/deals/summary": lambda: user.get("/analytics/deals/summary"),
        "GET /analytics/deals/funnel": lambda: user.get("/analytics/deals/funnel"),
        "GET /organizations/{id}": lambda: user.get(f"/organizations/{org}"),
        "GET /organizations/{id}/members": lambda: user.get(f"/organizations/{org}/members"),
        "GET /auth/me": lambda: user.get("/auth/me"),
        "GET /organizations/me": lambda: user.get("/organizations/me"),
        "POST /organizations": lambda: user.post("/organizations", json={"name": "After"}),
    }


async def assert_all_ok(user: User, deal_id: int) -> None:
    for name, send in requests_of(user, deal_id).items():
        response = await send()
        assert response.status_code in (200, 201), (name, response.text)


async def assert_all_refused(user: User, deal_id: int) -> None:
    for name, send in requests_of(user, deal_id).items():
        response = await send()
        assert response.status_code == 401, (name, response.text)
        assert_problem(response, 401, "INVALID_TOKEN")
        assert response.headers["www-authenticate"] == "Bearer"


async def owner_with_deal(api: Api) -> tuple[User, int]:
    owner = await api.register(organization_name="Acme")
    deal = await create_deal(owner, await create_contact(owner))
    return owner, int(deal["id"])


async def test_after_logout_the_sessions_access_token_is_refused_everywhere(api: Api) -> None:
    owner, deal_id = await owner_with_deal(api)
    other_session = await login(api, owner)
    await assert_all_ok(owner, deal_id)  # verified, and remembered by the codec

    assert (await post_token(api, "/auth/logout", owner.refresh_token)).status_code == 204

    await assert_all_refused(owner, deal_id)
    await assert_all_ok(other_session, deal_id)  # only that session was revoked


async def test_refresh_token_reuse_refuses_every_access_token_of_the_session(api: Api) -> None:
    owner, deal_id = await owner_with_deal(api)
    other_session = await login(api, owner)
    rotated = await post_token(api, "/auth/refresh", owner.refresh_token)
    assert rotated.status_code == 200, rotated.text
    newer = as_user(owner, api, rotated.json()["access_token"])
    await assert_all_ok(owner, deal_id)
    await assert_all_ok(newer, deal_id)

    reused = await post_token(api, "/auth/refresh", owner.refresh_token)
    assert_problem(reused, 401, "REFRESH_TOKEN_REUSED")

    await assert_all_refused(owner, deal_id)  # the first access token of the session
    await assert_all_refused(newer, deal_id)  # and the one issued by the rotation
    await assert_all_ok(other_session, deal_id)


async def test_another_instance_refuses_the_token_after_a_logout_elsewhere(
    make_api: AppFactory, database_url: str
) -> None:
    first = await make_api(database_url)
    second = await make_api(database_url)
    owner, deal_id = await owner_with_deal(first)
    on_second = as_user(owner, second)
    await assert_all_ok(on_second, deal_id)  # remembered by the second instance's codec

    assert (await post_token(first, "/auth/logout", owner.refresh_token)).status_code == 204

    await assert_all_refused(on_second, deal_id)
    await assert_all_refused(owner, deal_id)


async def test_a_token_naming_another_users_session_is_refused(api: Api) -> None:
    """The session id is bound to the user: a token for user A with B's live session id (as a
    holder of the signing key could write) opens nothing."""
    owner, deal_id = await owner_with_deal(api)
    other = await api.register()
    tokens = api.app.state.resources.tokens
    other_session = tokens.decode(other.access_token, TokenType.ACCESS).session_id
    forged = tokens.issue(owner.id, other_session, TokenType.ACCESS).token

    await assert_all_refused(as_user(owner, api, forged), deal_id)
