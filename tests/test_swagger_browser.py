"""Swagger UI in a real browser: log in, authorize, call a protected endpoint, see 200.

Drives Debian's headless Chromium with Playwright against a real uvicorn process. Skipped when
Chromium is not installed, unless REQUIRE_SERVICES=1 (CI installs it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, migrate, skip_or_fail
from tests.support import PASSWORD

# A browser and a server process: `make test` leaves it out, `make test-slow` (and CI) run it.
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'browser.db'}"
        migrate(database_url)
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "ENVIRONMENT": "test",
            "SECRET_KEY": "browser-test-secret-key-0123456789abcdef",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                pytest.fail("the server did not start within 30 s")
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_swagger_ui_login_authorize_and_call(server: str) -> None:
    if not shutil.which(CHROMIUM):
        skip_or_fail(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    registered = httpx.post(
        f"{server}/api/v1/auth/register",
        json={
            "email": "swagger@example.com",
            "password": PASSWORD,
            "name": "Swagger",
            "organization_name": "Browser Org",
        },
    )
    assert registered.status_code == 201, registered.text

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(f"{server}/docs")
            login = page.locator("#operations-auth-login")
            expect(login).to_be_visible(timeout=30_000)

            # 1. Log in through Swagger's own "Try it out".
            login.locator(".opblock-summary").click()
            login.get_by_role("button", name="Try it out").click()
            login.locator("textarea.body-param__text").fill(
                json.dumps({"email": "swagger@example.com", "password": PASSWORD})
            )
            login.get_by_role("button", name="Execute").click()
            live = login.locator(".live-responses-table .response")
            expect(live.locator(".response-col_status").first).to_have_text("200", timeout=15_000)
            body = json.loads(live.locator(".response-col_description pre").first.inner_text())
            token = body["access_token"]

            # 2. Authorize with the access token and the organization id (two schemes).
            page.locator(".auth-wrapper .authorize").click()
            dialog = page.locator(".dialog-ux")
            for scheme, value in (
                ("HTTPBearer", token),
                ("OrganizationId", str(registered.json()["organization"]["id"])),
            ):
                form = dialog.locator("form").filter(has_text=scheme)
                form.locator("input").first.fill(value)
                form.locator(".auth-btn-wrapper .authorize").click()
            dialog.locator(".auth-btn-wrapper .btn-done").first.click()

            # 3. Call a protected endpoint and see 200 with the user's organization.
            mine = page.locator("#operations-organizations-list_my_organizations")
            mine.locator(".opblock-summary").click()
            mine.get_by_role("button", name="Try it out").click()
            mine.get_by_role("button", name="Execute").click()
            result = mine.locator(".live-responses-table .response")
            expect(result.locator(".response-col_status").first).to_have_text("200", timeout=15_000)
            expect(result.locator(".response-col_description pre").first).to_contain_text(
                "Browser Org"
            )

            # 4. A tenant endpoint: the organization id from Authorize is sent as the header.
            contacts = page.locator("#operations-contacts-create_contact")
            contacts.locator(".opblock-summary").click()
            contacts.get_by_role("button", name="Try it out").click()
            contacts.get_by_role("button", name="Execute").click()  # the schema's example
            created = contacts.locator(".live-responses-table .response")
            expect(created.locator(".response-col_status").first).to_have_text(
                "201", timeout=15_000
            )
            expect(created.locator(".response-col_description pre").first).to_contain_text(
                "Jane Cooper"
            )
        finally:
            browser.close()
