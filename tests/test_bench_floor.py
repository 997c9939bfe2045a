"""The benchmark's floor (`bench/floor.py`) answers `GET /deals/{id}` exactly as the app does.

The floor is the yardstick of `make bench`: its ratio to the app is only the price of the
framework stack if both do the same work and send the same answer. These tests put the same
requests to the app and to the floor (both in-process, on the same PostgreSQL database) and
compare statuses, body bytes and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from bench import floor
from bench.run import RATE_LIMITS_OFF
from tests.conftest import AppFactory, make_settings
from tests.support import Api, create_contact, create_deal


@pytest.fixture
async def pg_api(make_api: AppFactory, pg_url: str) -> Api:
    """The app as `make bench` serves it beside the floor: rate limits off (their cost is
    measured on its own), so neither sends the rate-limit fields."""
    return await make_api(pg_url, **RATE_LIMITS_OFF)


@pytest.fixture
async def floor_client(
    pg_api: Api, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(pg_url)
    # the floor reads the app's settings from the environment, as when served by uvicorn
    monkeypatch.setenv("ENVIRONMENT", settings.ENVIRONMENT.value)
    monkeypatch.setenv("SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    async with LifespanManager(floor.app) as manager:  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_the_floor_answers_a_deal_with_the_apps_bytes_and_headers(
    pg_api: Api, floor_client: httpx.AsyncClient
) -> None:
    owner = await pg_api.register(organization_name="Floor Org")
    contact = await create_contact(owner)
    deal = await create_deal(
        owner, contact, title="Внедрение CRM für Müller", amount="1234.50", currency="EUR"
    )
    path = pg_api.url(f"/deals/{deal['id']}")
    headers = {**owner.headers(), "X-Request-ID": "compare-1"}

    ours = await pg_api.client.get(path, headers=headers)
    theirs = await floor_client.get(path, headers=headers)

    assert ours.status_code == theirs.status_code == 200
    assert theirs.content == ours.content
    assert dict(theirs.headers) == dict(ours.headers)

    # without a request id, both make one up of the same form
    ours = await pg_api.client.get(path, headers=owner.headers())
    theirs = await floor_client.get(path, headers=owner.headers())
    assert theirs.content == ours.content
    assert sorted(theirs.headers) == sorted(ours.headers)
    assert len(theirs.headers["x-request-id"]) == len(ours.headers["x-request-id"]) == 32


async def test_the_floor_refuses_and_misses_as_the_app_does(
    pg_api: Api, floor_client: httpx.AsyncClient
) -> None:
    owner = await pg_api.register(organization_name="Floor Org")
    other = await pg_api.register(organization_name="Other Org")
    deal = await create_deal(owner, await create_contact(owner))
    other_deal = await create_deal(other, await create_contact(other))
    cases = [
        (f"/deals/{deal['id']}", owner.headers()),  # 200
        (f"/deals/{other_deal['id']}", owner.headers()),  # 404: another organization's deal
        (f"/deals/{deal['id']}", owner.headers(other.organization_id)),  # 403: not a member
        (f"/deals/{deal['id']}", {**owner.headers(), "Authorization": "Bearer x.y.z"}),  # 401
        (f"/deals/{deal['id']}", {"X-Organization-Id": str(owner.organization_id)}),  # 401
        (f"/deals/{deal['id']}", other.headers()),  # 404 in the caller's own organization
        (f"/deals/{deal['id']}", {**owner.headers(), "X-Organization-Id": "0"}),  # 422
        (f"/deals/{2**63}", owner.headers()),  # 422: out of range
        (f"/deals/{2**63}", {**owner.headers(), "Authorization": "Bearer x.y.z"}),  # 401 first
    ]
    for path, headers in cases:
        ours = await pg_api.client.get(pg_api.url(path), headers=headers)
        theirs = await floor_client.get(pg_api.url(path), headers=headers)
        assert (path, theirs.status_code) == (path, ours.status_code)
        assert theirs.headers["content-type"] == ours.headers["content-type"]


async def test_the_floor_refuses_a_revoked_session_as_the_app_does(
    pg_api: Api, floor_client: httpx.AsyncClient
) -> None:
    owner = await pg_api.register(organization_name="Floor Org")
    deal = await create_deal(owner, await create_contact(owner))
    path = pg_api.url(f"/deals/{deal['id']}")
    assert (await floor_client.get(path, headers=owner.headers())).status_code == 200
    logout = await pg_api.client.post(
        pg_api.url("/auth/logout"), json={"refresh_token": owner.refresh_token}
    )
    assert logout.status_code == 204
    ours = await pg_api.client.get(path, headers=owner.headers())
    theirs = await floor_client.get(path, headers=owner.headers())
    assert ours.status_code == theirs.status_code == 401


def test_the_floor_sends_the_apps_own_statement() -> None:
    from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

    from app.core.tenancy import Caller
    from app.repositories.deals import TENANT_AND_DEAL

    compiled = TENANT_AND_DEAL[Caller].compile(dialect=asyncpg_dialect.dialect())
    assert compiled.string == floor.SQL
    assert tuple(compiled.positiontup or ()) == floor.PARAMETERS
    floor.check_parameters()  # the floor can fill every one of them


def test_the_floor_will_not_start_on_a_statement_it_cannot_fill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(floor, "PARAMETERS", (*floor.PARAMETERS, "session_generation"))
    with pytest.raises(RuntimeError, match="session_generation"):
        floor.check_parameters()
