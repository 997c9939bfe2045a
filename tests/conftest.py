"""Test harness: the real app over ASGI, a real database built by the Alembic migrations.

Backends, chosen by environment variables:
- TEST_DATABASE_URL   the main backend (default: a temporary SQLite file);
- TEST_POSTGRES_URL   PostgreSQL for the PostgreSQL-only tests (else TEST_DATABASE_URL if it
                      is PostgreSQL); TEST_REDIS_URL for the Redis tests.
Tests needing a service that is not configured are skipped, unless REQUIRE_SERVICES=1 (set
by CI), which turns every such skip into a failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from app.core.config import Environment, Settings
from app.main import create_app
from app.models import Base
from tests.support import Api, Team, User

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
_migrated: set[str] = set()


def skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1: this test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite+aiosqlite:///{tmp}/test.db"


@pytest.fixture(scope="session")
def database_url(sqlite_url: str) -> str:
    return os.environ.get("TEST_DATABASE_URL") or sqlite_url


def postgres_url() -> str | None:
    url = os.environ.get("TEST_POSTGRES_URL") or os.environ.get("TEST_DATABASE_URL")
    return url if url and url.startswith("postgresql") else None


def redis_url() -> str | None:
    return os.environ.get("TEST_REDIS_URL") or None


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ENVIRONMENT": Environment.TEST,
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": None,
        # A test process on a loaded machine can be paused for longer than the production
        # default (milliseconds), which would turn a cache hit into a miss at random. The
        # tests of Redis failures set their own timeouts.
        "REDIS_TIMEOUT_SECONDS": 1.0,
        "RATE_LIMIT_PER_MINUTE": 100_000,  # tests make many requests; test_rate_limits sets its own
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def migrate(database_url: str) -> None:
    """Build the schema from the migrations (once per database per run)."""
    if database_url in _migrated:
        return
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    _migrated.add(database_url)


# The deployment's generated signing key is not data: an app already running keeps signing with
# it, and every app started on the same database must read the same one.
_KEPT_TABLES = frozenset({"signing_keys"})


async def truncate_all(engine: AsyncEngine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name not in _KEPT_TABLES]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608


AppFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api() -> AsyncIterator[AppFactory]:
    """Start app instances on a database (fresh: every table emptied first)."""
    stack: list[tuple[LifespanManager, httpx.AsyncClient]] = []

    async def factory(database_url: str, **overrides: Any) -> Api:
        await anyio.to_thread.run_sync(migrate, database_url)
        settings = make_settings(database_url, **overrides)
        app = create_app(settings)
        manager = LifespanManager(app)
        await manager.__aenter__()
        if not stack:
            await truncate_all(app.state.resources.engine)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://testserver",
        )
        stack.append((manager, client))
        return Api(client=client, app=app, prefix=settings.API_V1_PREFIX)

    yield factory
    for manager, client in reversed(stack):
        await client.aclose()
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def api(make_api: AppFactory, database_url: str) -> Api:
    return await make_api(database_url)


@pytest.fixture
def pg_url() -> str:
    url = postgres_url()
    if url is None:
        skip_or_fail("PostgreSQL not configured (set TEST_POSTGRES_URL)")
    assert url is not None
    return url


@pytest.fixture
async def pg_api(make_api: AppFactory, pg_url: str) -> Api:
    return await make_api(pg_url)


@pytest.fixture
def redis_test_url() -> str:
    url = redis_url()
    if url is None:
        skip_or_fail("Redis not configured (set TEST_REDIS_URL)")
    assert url is not None
    return url


@pytest.fixture
async def owner(api: Api) -> User:
    return await api.register(organization_name="Acme")


@pytest.fixture
async def team(api: Api, owner: User) -> Team:
    return Team(
        owner=owner,
        admin=await api.member_of(owner, "admin"),
        manager=await api.member_of(owner, "manager"),
        member=await api.member_of(owner, "member"),
    )


@pytest.fixture
def engine(api: Api) -> AsyncEngine:
    return api.app.state.resources.engine  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
