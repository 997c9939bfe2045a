"""The test harness itself: the settings every test app gets, one database per xdist worker,
Redis tests taking turns across workers, and REQUIRE_SERVICES failing a missing service inside
workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.conftest import ROOT, AppFactory, worker_database_url
from tests.support import PASSWORD, Api


async def password_hash_of(engine: AsyncEngine, user_id: int) -> str:
    async with engine.connect() as conn:
        value = await conn.scalar(
            text("SELECT password_hash FROM users WHERE id = :id"), {"id": user_id}
        )
    assert isinstance(value, str)
    return value


async def test_test_apps_hash_cheaply_unless_a_test_asks_for_the_real_cost(
    make_api: AppFactory, database_url: str
) -> None:
    cheap = await make_api(database_url)
    real_cost = {
        name: Settings.model_fields[name].default
        for name in ("ARGON2_MEMORY_COST_KIB", "ARGON2_TIME_COST", "ARGON2_PARALLELISM")
    }
    real = await make_api(database_url, **real_cost)

    cheap_user = await cheap.register()
    real_user = await real.register()

    engine = cheap.app.state.resources.engine
    assert (await password_hash_of(engine, cheap_user.id)).startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert (await password_hash_of(engine, real_user.id)).startswith(
        "$argon2id$v=19$m=19456,t=2,p=1$"
    )
    # Either app verifies the other's hashes: the parameters travel inside the hash.
    for api, user in ((cheap, real_user), (real, cheap_user)):
        assert (await login(api, user.email)).status_code == 200


async def login(api: Api, email: str) -> httpx.Response:
    return await api.client.post(
        api.url("/auth/login"), json={"email": email, "password": PASSWORD}
    )


def test_each_xdist_worker_gets_a_database_of_its_own() -> None:
    pg = "postgresql+asyncpg://postgres:secret@127.0.0.1:5432/minicrm_test"
    assert worker_database_url(pg, "gw1") == (
        "postgresql+asyncpg://postgres:secret@127.0.0.1:5432/minicrm_test_gw1"
    )
    assert worker_database_url(pg, None) == pg  # no xdist: the configured database itself
    assert worker_database_url("sqlite+aiosqlite:////tmp/run/test.db", "gw0") == (
        "sqlite+aiosqlite:////tmp/run/test_gw0.db"
    )
    assert worker_database_url("sqlite+aiosqlite://", "gw0") == "sqlite+aiosqlite://"


GENERATED_TESTS = """
import os
import time
from pathlib import Path

import pytest

OUT = Path(os.environ["HARNESS_OUT"])


def record(name):
    (OUT / name).write_text(os.environ.get("PYTEST_XDIST_WORKER", "none"))


def test_needs_postgresql(pg_url):
    record("postgresql")


@pytest.mark.parametrize("n", range(6))
def test_uses_redis(redis_test_url, n):
    # Fails if another test is using the same Redis at this moment.
    busy = os.open(OUT / "busy", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        time.sleep(0.3)
        record(f"redis-{n}")
    finally:
        os.close(busy)
        os.unlink(OUT / "busy")
"""


def test_in_xdist_workers_redis_tests_take_turns_and_missing_services_fail(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_generated.py").write_text(GENERATED_TESTS)
    out = tmp_path / "out"
    out.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "TEST_", "COV_", "COVERAGE_"))
    }
    env.update(
        REQUIRE_SERVICES="1",
        TEST_REDIS_URL="redis://127.0.0.1:1/0",  # configured (never connected to)
        HARNESS_OUT=str(out),
    )

    result = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(ROOT),
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-p",  # plugins these tests do not use: less to import in each process
            "no:schemathesis",
            "-p",
            "no:hypothesispytest",
            "-n",
            "2",
            str(tmp_path / "test_generated.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "6 passed, 1 error" in output, output  # pg_url fails in its setup
    assert "PostgreSQL not configured" in output, output
    assert "REQUIRE_SERVICES=1: this test must run" in output, output
    assert not (out / "postgresql").exists()
    workers = {path.read_text() for path in out.glob("redis-*")}
    assert workers == {"gw0", "gw1"}, "the Redis tests ran in both workers"
