"""A Python client generated from the running server's document does the whole flow, typed.

What an integrator does: start the server, generate a client from `/api/v1/openapi.json` with
openapi-python-client (pinned in the dev dependencies), and use it without raw HTTP: register,
log in, create an organization, a contact and a deal, move the deal to won with `If-Match`,
list with filters, read the analytics, issue an API key and read the change feed with it, and
get a typed `Problem` for an error. Any warning from
the generator (a schema it could not turn into a type) fails the test."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.live_server import VENV_BIN, LiveServer, migrate, server_env, sqlite_url, uvicorn_server

# Starts a server and generates a package: seconds. `make test-slow` (and CI) run it.
pytestmark = pytest.mark.slow

PACKAGE = "minicrm_generated_client"
PASSWORD = "StrongPassword123"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    env = server_env(sqlite_url(tmp_path))
    migrate(env, tmp_path)
    with uvicorn_server("app.main:app", env, tmp_path) as live:
        yield live


def generate(server: LiveServer, directory: Path) -> None:
    document = httpx.get(f"{server.url}/api/v1/openapi.json", timeout=10)
    assert document.status_code == 200
    path = directory / "openapi.json"
    path.write_bytes(document.content)
    result = subprocess.run(  # noqa: S603 - the pinned generator from the dev dependencies
        [
            str(VENV_BIN / "openapi-python-client"),
            "generate",
            *("--path", str(path)),
            *("--output-path", str(directory / PACKAGE)),
            *("--meta", "none"),
            "--fail-on-warning",
        ],
        # Its post-generation hooks run `ruff` from PATH.
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output


@pytest.fixture
def generated(server: LiveServer, tmp_path: Path) -> Iterator[ModuleType]:
    generate(server, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _import(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_the_whole_flow_with_the_generated_client(
    server: LiveServer, generated: ModuleType
) -> None:
    models = _import("models")
    auth = {name: _import(f"api.auth.{name}") for name in ("register", "login", "read_me")}
    organizations = _import("api.organizations.create_organization")
    create_contact = _import("api.contacts.create_contact")
    deals = {
        name: _import(f"api.deals.{name}")
        for name in ("create_deal", "read_deal", "update_deal", "list_deals")
    }
    summary = _import("api.analytics.read_deals_summary")
    create_api_key = _import("api.api_keys.create_api_key")
    list_events = _import("api.events.list_events")

    anonymous = generated.Client(base_url=server.url, raise_on_unexpected_status=True)
    registered = auth["register"].sync_detailed(
        client=anonymous,
        body=models.RegisterRequest(
            email="ann@example.com", password=PASSWORD, name="Ann", organization_name="Acme"
        ),
    )
    assert registered.status_code == 201
    assert isinstance(registered.parsed, models.RegisterResponse)
    assert registered.parsed.organization.role == models.Role.OWNER

    tokens = auth["login"].sync(
        client=anonymous, body=models.LoginRequest(email="ann@example.com", password=PASSWORD)
    )
    assert isinstance(tokens, models.TokenPair)
    client = generated.AuthenticatedClient(
        base_url=server.url, token=tokens.access_token, raise_on_unexpected_status=True
    )
    me = auth["read_me"].sync(client=client)
    assert isinstance(me, models.MeResponse)
    assert me.email == "ann@example.com"

    organization = organizations.sync(
        client=client, body=models.OrganizationCreate(name="Acme Europe")
    )
    assert isinstance(organization, models.OrganizationRead)
    tenant = client.with_headers({"X-Organization-Id": str(organization.id)})

    contact = create_contact.sync(
        client=tenant, body=models.ContactCreate(name="Jane Cooper", email="jane@example.com")
    )
    assert isinstance(contact, models.ContactRead)
    deal = deals["create_deal"].sync(
        client=tenant,
        body=models.DealCreate(
            contact_id=contact.id, title="Website redesign", amount="12500.50", currency="eur"
        ),
    )
    assert isinstance(deal, models.DealRead)
    assert deal.amount == 12500.5
    assert deal.currency == "EUR"
    assert deal.status == models.DealStatus.NEW

    read = deals["read_deal"].sync_detailed(client=tenant, deal_id=deal.id)
    etag = read.headers["etag"]
    won = deals["update_deal"].sync_detailed(
        client=tenant,
        deal_id=deal.id,
        body=models.DealUpdate(status=models.DealStatus.WON, stage=models.DealStage.CLOSED),
        if_match=etag,
    )
    assert won.status_code == 200
    assert isinstance(won.parsed, models.DealRead)
    assert won.parsed.status == models.DealStatus.WON
    # The ETag it was sent with is stale now: a typed 412 problem, nothing changed.
    stale = deals["update_deal"].sync_detailed(
        client=tenant,
        deal_id=deal.id,
        body=models.DealUpdate(title="Renamed"),
        if_match=etag,
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, models.Problem)
    assert stale.parsed.code == "PRECONDITION_FAILED"

    page = deals["list_deals"].sync(
        client=tenant,
        status=[models.DealStatus.WON],
        min_amount="100",
        order_by=models.DealOrderBy.AMOUNT,
    )
    assert isinstance(page, models.PageDealRead)
    assert [d.id for d in page.items] == [deal.id]
    assert page.total == 1
    cursor_page = deals["list_deals"].sync(client=tenant, limit=1)
    assert isinstance(cursor_page, models.CursorPageDealRead)
    assert cursor_page.next_cursor is None

    figures = summary.sync(client=tenant)
    assert isinstance(figures, models.DealSummary)
    assert figures.by_status.won.count == 1
    assert figures.by_status.won.total_amount == 12500.5
    assert figures.by_status.lost.count == 0

    # A script's own credential: an API key, shown once, implies its organization.
    issued = create_api_key.sync(
        client=client,
        organization_id=organization.id,
        body=models.ApiKeyCreate(name="Billing sync", role=models.AssignableRole.MEMBER),
    )
    assert isinstance(issued, models.ApiKeyCreated)
    machine = generated.AuthenticatedClient(
        base_url=server.url, token=issued.key, raise_on_unexpected_status=True
    )
    by_key = deals["read_deal"].sync(client=machine, deal_id=deal.id)
    assert isinstance(by_key, models.DealRead)
    assert by_key.status == models.DealStatus.WON

    # The change feed, read with the key: every change above, oldest first, exactly once.
    feed = list_events.sync(client=machine, types="deal.*")
    assert isinstance(feed, models.EventFeedPage)
    assert [e.type_ for e in feed.items] == ["deal.created", "deal.updated"]
    assert feed.items[1].data.changes.additional_properties["status"] == ["new", "won"]
    assert feed.items[1].actor.type_ == models.EventActorType.USER
    after = list_events.sync(client=machine, after=feed.next_cursor)
    assert isinstance(after, models.EventFeedPage)
    assert after.items == []

    missing = deals["read_deal"].sync_detailed(client=tenant, deal_id=deal.id + 1000)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.code == "DEAL_NOT_FOUND"
    assert missing.parsed.request_id == missing.headers["x-request-id"]
    invalid = create_contact.sync_detailed(client=tenant, body=models.ContactCreate(name=""))
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.Problem)
    assert invalid.parsed.errors[0].loc == ["body", "name"]
