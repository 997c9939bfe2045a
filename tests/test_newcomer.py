"""A newcomer's first commands: `uvicorn app.main:app`, and `minicrm migrate` against a
PostgreSQL database that does not exist yet."""

from __future__ import annotations

import importlib
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.core.config import get_settings
from tests.conftest import postgres_url, skip_or_fail
from tests.live_server import ROOT, free_port, migrate, server_env, sqlite_url, uvicorn_server
from tests.support import run_minicrm


def test_uvicorn_serves_the_app_by_its_import_string_with_reload(tmp_path: Path) -> None:
    """`uvicorn app.main:app --reload`, the command most people type first."""
    env = server_env(sqlite_url(tmp_path))
    migrate(env, tmp_path)
    with uvicorn_server(
        "app.main:app", env, tmp_path, "--reload", "--reload-dir", str(tmp_path)
    ) as server:
        assert httpx.get(f"{server.url}/health", timeout=5).json() == {"status": "ok"}
        register = httpx.post(
            f"{server.url}/api/v1/auth/register",
            json={
                "email": "ann@example.com",
                "password": "StrongPassword123",
                "name": "Ann",
                "organization_name": "Acme",
            },
            timeout=30,
        )
        assert register.status_code == 201, register.text


async def test_app_main_app_is_built_from_the_settings_and_connects_only_in_its_lifespan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    for name, value in server_env(url).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    main = importlib.import_module("app.main")
    main.__dict__.pop("app", None)
    try:
        application = main.app
        assert isinstance(application, FastAPI)
        assert main.app is application  # built once
        assert str(application.state.settings.DATABASE_URL) == url
        assert not hasattr(application.state, "resources")  # nothing opened yet
        assert not (tmp_path / "app.db").exists()
        async with LifespanManager(application):
            assert application.state.resources.engine.url.database == str(tmp_path / "app.db")
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
    finally:
        main.__dict__.pop("app", None)
        get_settings.cache_clear()


def _minicrm(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_minicrm(env, *args, cwd=cwd, timeout=120, PYTHONPATH=str(ROOT))


def _missing_database_url() -> tuple[str, str]:
    url = postgres_url()
    if url is None:
        skip_or_fail("needs PostgreSQL (TEST_POSTGRES_URL or TEST_DATABASE_URL)")
        raise AssertionError("unreachable")
    name = f"minicrm_missing_{secrets.token_hex(6)}"
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


@pytest.mark.parametrize("args", [("migrate",), ("serve", "--port", "0")])
def test_a_database_that_does_not_exist_is_one_clear_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """`make run` is `minicrm serve`: migrate, then serve."""
    url, name = _missing_database_url()
    result = _minicrm(server_env(url), tmp_path, *args)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"the database '{name}' does not exist" in lines[0]
    assert f"createdb -h {make_url(url).host}" in lines[0]
    assert lines[0].endswith(f" {name}")


def test_an_unreachable_database_server_is_one_clear_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/minicrm"
    result = _minicrm(server_env(url), tmp_path, "migrate")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot connect to the database at" in lines[0]


def test_a_sqlite_file_in_a_missing_directory_is_one_clear_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'absent' / 'crm.db'}"
    result = _minicrm(server_env(url), tmp_path, "migrate")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"the directory {tmp_path / 'absent'} does not exist" in lines[0]


def test_make_run_goes_through_minicrm_serve() -> None:
    result = subprocess.run(  # noqa: S603
        ["make", "-n", "-C", str(ROOT), "run", "VENV=.venv-probe"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    assert "minicrm serve --host 127.0.0.1 --port 8000" in result.stdout, result.stdout
    assert "alembic upgrade head" not in result.stdout
