"""The `minicrm` command: migrate, create-user (then log in through the API), wait-db, serve.

Commands that touch a database run in a child process, as an operator would run them (and so
Alembic's logging setup stays out of the test process); `serve` runs in-process with uvicorn
replaced, to see what it would start.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from asgi_lifespan import LifespanManager

from app import cli
from app.core.config import get_settings
from app.main import create_app
from tests.conftest import make_settings
from tests.support import run_minicrm

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "CliPassword123"
# Variables the commands read; a developer's shell must not leak them into these tests.
_SCRUBBED = (
    "DATABASE_URL",
    "REDIS_URL",
    "ENVIRONMENT",
    "SECRET_KEY",
    "MINICRM_PASSWORD",
    "DB_WAIT_TIMEOUT",
    "HOST",
    "PORT",
    "WEB_CONCURRENCY",
    "ANALYTICS_CACHE_TTL",
    "PROMETHEUS_MULTIPROC_DIR",
)


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def db_url(sqlite_file: Path) -> str:
    return f"sqlite+aiosqlite:///{sqlite_file}"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `minicrm` child process."""
    values = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    values.update(
        DATABASE_URL=db_url,
        REDIS_URL="",
        ENVIRONMENT="test",
        SECRET_KEY="cli-test-secret-key-that-is-long-enough-0123",
        LOG_LEVEL="WARNING",
    )
    return values


def tables(sqlite_file: Path) -> set[str]:
    with sqlite3.connect(sqlite_file) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


def head_revision() -> str | None:
    return ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()


def parse_ids(stdout: str) -> dict[str, int]:
    return {key: int(value) for key, value in re.findall(r"^(\w+_id)=(\d+)$", stdout, re.M)}


# --- migrate and create-user, in child processes ---------------------------------------------


def test_migrate_builds_the_schema_up_to_the_head_revision(
    env: dict[str, str], sqlite_file: Path, tmp_path: Path
) -> None:
    result = run_minicrm(env, "migrate", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert {"users", "organizations", "memberships", "alembic_version"} <= tables(sqlite_file)
    with sqlite3.connect(sqlite_file) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()
    # Running it again is a no-op, not an error (the entrypoint runs it on every start).
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0


async def test_created_user_can_log_in_and_owns_the_organization(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0

    result = run_minicrm(
        env,
        "create-user",
        "--email",
        "Admin@Example.com",
        "--name",
        "Ada Admin",
        "--organization",
        "Acme Ltd",
        cwd=tmp_path,
        MINICRM_PASSWORD=PASSWORD,
    )

    assert result.returncode == 0, result.stderr
    ids = parse_ids(result.stdout)
    assert set(ids) == {"user_id", "organization_id"}, result.stdout
    app = create_app(make_settings(db_url))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        login = await client.post(
            "/api/v1/auth/login", json={"email": "admin@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        me = await client.get(
            "/api/v1/auth/me",
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["id"] == ids["user_id"]
    assert body["email"] == "admin@example.com"
    assert body["name"] == "Ada Admin"
    assert body["organizations"] == [
        {"id": ids["organization_id"], "name": "Acme Ltd", "role": "owner"}
    ]


def test_create_user_with_a_taken_email_exits_1(
    env: dict[str, str], sqlite_file: Path, tmp_path: Path
) -> None:
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0
    first = run_minicrm(
        env,
        "create-user",
        "--email",
        "ann@example.com",
        "--name",
        "Ann",
        "--password",
        PASSWORD,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr

    again = run_minicrm(
        env,
        "create-user",
        "--email",
        "ANN@example.com",
        "--name",
        "Ann 2",
        "--password",
        PASSWORD,
        cwd=tmp_path,
    )

    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert again.stdout == ""
    with sqlite3.connect(sqlite_file) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        # All or nothing: the refused registration left no organization behind.
        assert conn.execute("SELECT count(*) FROM organizations").fetchone() == (1,)


def test_create_user_without_a_password_and_no_terminal_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0

    result = run_minicrm(
        env, "create-user", "--email", "bob@example.com", "--name", "Bob", cwd=tmp_path
    )

    assert result.returncode == 2
    assert "MINICRM_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_create_user_rejects_invalid_input_like_the_api(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0

    result = run_minicrm(
        env,
        "create-user",
        "--email",
        "not-an-email",
        "--name",
        "Bob",
        "--password",
        "short",
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "email" in result.stderr
    assert "password" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_configuration_is_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    result = run_minicrm(env, "migrate", cwd=tmp_path, ENVIRONMENT="production", SECRET_KEY="short")

    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "minicrm"
    assert script.exists(), "reinstall the project: pip install -e '.[dev]'"
    result = subprocess.run(  # noqa: S603
        [str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    for name in ("serve", "migrate", "wait-db", "create-user"):
        assert name in result.stdout


# --- wait-db ------------------------------------------------------------------------------------


def test_wait_db_succeeds_at_once_when_the_database_answers(
    env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    result = run_minicrm(env, "wait-db", "--timeout", "5", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "ready" in result.stderr
    assert time.monotonic() - started < 5


def test_wait_db_gives_up_after_the_timeout(
    env: dict[str, str], tmp_path: Path, closed_port: int
) -> None:
    url = f"postgresql+asyncpg://minicrm:hunter2@127.0.0.1:{closed_port}/minicrm"
    started = time.monotonic()

    result = run_minicrm(env, "wait-db", cwd=tmp_path, DATABASE_URL=url, DB_WAIT_TIMEOUT="2")

    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert 2 <= elapsed < 10
    assert len(re.findall("not ready", result.stderr)) >= 2, "one message per failed attempt"
    assert "timed out after 2s" in result.stderr
    assert "hunter2" not in result.stderr, "the password must not be printed"


@pytest.fixture
def closed_port() -> int:
    """A local TCP port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- serve, in-process with uvicorn.run replaced ------------------------------------------------


@pytest.fixture
def serve_calls(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> Iterator[list[dict[str, Any]]]:
    """Runs `serve` in this process: records what uvicorn would be started with, and whether
    migrations ran, instead of doing either."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in _SCRUBBED:
        # setenv first, so teardown restores the variable even though `serve` itself (not
        # monkeypatch) sets some of them in os.environ.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("ENVIRONMENT", "test")
    calls: list[dict[str, Any]] = []

    def fake_run(app: str, **kwargs: Any) -> None:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        calls.append(
            {
                "app": app,
                "ANALYTICS_CACHE_TTL": os.environ.get("ANALYTICS_CACHE_TTL"),
                "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                "metrics_dir_was_empty": metrics_dir is not None and not os.listdir(metrics_dir),
                **kwargs,
            }
        )

    monkeypatch.setattr("uvicorn.run", fake_run)
    monkeypatch.setattr(cli, "run_migrations", lambda settings: calls.append({"migrated": True}))
    get_settings.cache_clear()
    yield calls
    get_settings.cache_clear()


def test_serve_migrates_then_starts_the_factory_with_env_defaults(
    serve_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")  # noqa: S104
    monkeypatch.setenv("PORT", "9123")

    assert cli.main(["serve"]) == 0

    migrated, started = serve_calls
    assert migrated == {"migrated": True}
    assert started["app"] == "app.main:create_app"
    assert started["factory"] is True
    assert (started["host"], started["port"], started["workers"]) == ("0.0.0.0", 9123, 1)  # noqa: S104
    assert started["proxy_headers"] is True
    assert started["ANALYTICS_CACHE_TTL"] is None  # one process: its cache is the only one
    assert started["PROMETHEUS_MULTIPROC_DIR"] is None


def test_serve_options_override_env_and_no_migrate_skips_migrations(
    serve_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9123")

    assert cli.main(["serve", "--no-migrate", "--port", "9200", "--host", "127.0.0.2"]) == 0

    [started] = serve_calls
    assert (started["host"], started["port"]) == ("127.0.0.2", 9200)


def test_serve_with_workers_and_no_redis_warns_that_counts_are_per_worker(
    serve_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")

    assert cli.main(["serve", "--no-migrate"]) == 0

    [started] = serve_calls
    assert started["workers"] == 3
    # The cache stays on: its entries carry the data version, so no worker serves stale data.
    assert started["ANALYTICS_CACHE_TTL"] is None
    warning = capsys.readouterr().err
    assert "REDIS_URL" in warning
    assert "login-throttle counts" in warning


def test_serve_with_workers_shares_one_fresh_metrics_directory(
    serve_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")

    assert cli.main(["serve", "--no-migrate", "--workers", "2"]) == 0

    [started] = serve_calls
    assert started["metrics_dir_was_empty"], "the workers need an empty directory to share"
    assert not Path(started["PROMETHEUS_MULTIPROC_DIR"]).exists(), "removed after the server"


def test_serve_keeps_a_configured_metrics_directory(
    serve_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))

    assert cli.main(["serve", "--no-migrate", "--workers", "2"]) == 0

    [started] = serve_calls
    assert started["PROMETHEUS_MULTIPROC_DIR"] == str(metrics_dir)
    assert metrics_dir.exists()


def test_serve_with_workers_and_redis_keeps_the_cache(
    serve_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")

    assert cli.main(["serve", "--no-migrate", "--workers", "2"]) == 0

    [started] = serve_calls
    assert started["workers"] == 2
    assert started["ANALYTICS_CACHE_TTL"] is None
    assert "REDIS_URL" not in capsys.readouterr().err


def test_serve_refuses_reload_with_several_workers(
    serve_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--reload", "--workers", "2"]) == 2

    assert serve_calls == []
    assert "--reload" in capsys.readouterr().err


def test_serve_rejects_a_bad_port_from_the_environment(
    serve_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PORT", "eighty")

    with pytest.raises(SystemExit) as exc_info:
        cli.main(["serve"])

    assert exc_info.value.code == 2
    assert "--port" in capsys.readouterr().err
    assert serve_calls == []


def _row_counts(sqlite_file: Path) -> dict[str, int]:
    with sqlite3.connect(sqlite_file) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("users", "memberships", "contacts", "deals", "tasks", "activities")
        }


async def test_seed_demo_is_idempotent_and_gives_every_view_something(
    env: dict[str, str], db_url: str, sqlite_file: Path, tmp_path: Path
) -> None:
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0
    first = run_minicrm(env, "seed-demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    counts = _row_counts(sqlite_file)
    again = run_minicrm(env, "seed-demo", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _row_counts(sqlite_file) == counts
    org_id = parse_ids(first.stdout)["organization_id"]
    assert parse_ids(again.stdout)["organization_id"] == org_id

    app = create_app(make_settings(db_url))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        # The README's login example.
        login = await client.post(
            "/api/v1/auth/login",
            json={"email": "owner@example.com", "password": "StrongPassword123"},
        )
        assert login.status_code == 200, login.text
        assert login.json()["access_token"]
        headers = {
            "Authorization": f"Bearer {login.json()['access_token']}",
            "X-Organization-Id": str(org_id),
        }
        members = await client.get(f"/api/v1/organizations/{org_id}/members", headers=headers)
        assert {m["role"] for m in members.json()} == {"owner", "admin", "manager", "member"}
        cyrillic = await client.get("/api/v1/contacts?search=иван", headers=headers)
        assert cyrillic.json()["total"] >= 1
        deals = (await client.get("/api/v1/deals?page_size=100", headers=headers)).json()
        assert {d["stage"] for d in deals["items"]} == {
            "qualification",
            "proposal",
            "negotiation",
            "closed",
        }
        assert {d["status"] for d in deals["items"]} == {"new", "in_progress", "won", "lost"}
        # A won deal went through its statuses and stages: its timeline shows them (which
        # deal is newest depends on the time of day the demo is made relative to).
        won = next(d for d in deals["items"] if d["status"] == "won")
        timeline = await client.get(f"/api/v1/deals/{won['id']}/activities", headers=headers)
        assert timeline.json()["total"] >= 3
        assert (await client.get("/api/v1/tasks", headers=headers)).json()["total"] >= 200
        summary = (await client.get("/api/v1/analytics/deals/summary", headers=headers)).json()
        assert summary["by_status"]["won"]["count"] >= 20
        funnel = (await client.get("/api/v1/analytics/deals/funnel", headers=headers)).json()
        # The funnel is the default pipeline's (section 17): the demo has a second one.
        pipelines = (await client.get("/api/v1/pipelines", headers=headers)).json()
        in_pipelines = [
            (await client.get(f"/api/v1/deals?pipeline_id={p['id']}", headers=headers)).json()
            for p in pipelines
        ]
        assert sum(page["total"] for page in in_pipelines) == counts["deals"]
        default = [
            page["total"]
            for p, page in zip(pipelines, in_pipelines, strict=True)
            if p["is_default"]
        ]
        assert funnel["stages"][0]["reached"] == default[0]
        assert len(pipelines) == 2


def test_rebuild_stats_recomputes_the_running_totals(
    env: dict[str, str], sqlite_file: Path, tmp_path: Path
) -> None:
    assert run_minicrm(env, "migrate", cwd=tmp_path).returncode == 0
    assert run_minicrm(env, "seed-demo", cwd=tmp_path).returncode == 0
    live_totals = (
        "SELECT organization_id, currency, status, stage, sum(deal_count), sum(amount_sum) "
        "FROM deal_stats GROUP BY 1, 2, 3, 4 HAVING sum(deal_count) <> 0 ORDER BY 1, 2, 3, 4"
    )
    version = "SELECT sum(version) FROM deal_stats"
    with sqlite3.connect(sqlite_file) as conn:
        before = conn.execute(live_totals).fetchall()
        version_before = conn.execute(version).fetchone()[0]
        conn.execute("UPDATE deal_stats SET deal_count = 999")  # simulate drift
    result = run_minicrm(env, "rebuild-stats", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(sqlite_file) as conn:
        after = conn.execute(live_totals).fetchall()
        version_after = conn.execute(version).fetchone()[0]
    assert after == before
    assert version_after > version_before  # cached analytics from before are never served
    assert before
