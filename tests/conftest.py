"""Test harness: the real app over ASGI, a real database built by the Alembic migrations.

Backends, chosen by environment variables:
- TEST_DATABASE_URL   the main backend (default: a temporary SQLite file);
- TEST_POSTGRES_URL   PostgreSQL for the PostgreSQL-only tests (else TEST_DATABASE_URL if it
                      is PostgreSQL); TEST_REDIS_URL for the Redis tests.
Tests needing a service that is not configured are skipped, unless REQUIRE_SERVICES=1 (set
by CI), which turns every such skip into a failure.

Under pytest-xdist (`make test` runs `-n auto`) each worker has databases of its own: the
default SQLite file is per process; a configured PostgreSQL database `<name>` becomes
`<name>_gw0`, `<name>_gw1`, ... (dropped, created and migrated by the worker that uses it); a
configured SQLite file `x.db` becomes `x_gw0.db`, ... Redis tests take turns: the
`redis_test_url` fixture holds a lock (a file lock per Redis URL, shared by all workers) for the
whole test, so no two tests ever use, or flush, that Redis db at the same time.

Every app the tests start hashes passwords cheaply (`TEST_SETTINGS`); a test about the real
cost passes the Argon2 parameters it wants to `make_api`/`make_settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio.to_thread
import asyncpg
import httpx
import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from app.core.config import Environment, Settings
from app.db.session import create_engine
from app.main import create_app
from app.models import Base
from tests.support import Api, Team, User

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
# "gw0", "gw1", ... in a pytest-xdist worker; None in a plain (single-process) run.
WORKER = os.environ.get("PYTEST_XDIST_WORKER") or None
# The settings of every app the tests start, unless a test overrides them. Argon2 at its
# cheapest: registrations and logins are in almost every test, and the production cost
# (19 MiB, 2 passes) would make hashing most of the suite's time.
TEST_SETTINGS: dict[str, Any] = {
    "ENVIRONMENT": Environment.TEST,
    "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    "LOG_LEVEL": "WARNING",
    "REDIS_URL": None,
    # A test process on a loaded machine can be paused for longer than the production
    # default (milliseconds), which would turn a cache hit into a miss at random. The
    # tests of Redis failures set their own timeouts.
    "REDIS_TIMEOUT_SECONDS": 1.0,
    "RATE_LIMIT_PER_MINUTE": 100_000,  # tests make many requests; test_rate_limits sets its own
    "ARGON2_MEMORY_COST_KIB": 8,
    "ARGON2_TIME_COST": 1,
    # No background work in the apps the tests start: the webhook tests run deliveries
    # themselves, and no other test should see a delivery happen under it.
    "BACKGROUND_WORKER": "off",
}
_migrated: set[str] = set()
_created: set[str] = set()


def skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1: this test must run)")
    pytest.skip(reason)


def worker_database_url(url: str, worker: str | None = WORKER) -> str:
    """The database of one xdist worker: `<name>_<worker>` on PostgreSQL, `<stem>_<worker>.db`
    for a SQLite file; `url` itself outside xdist (and for an in-memory SQLite database)."""
    if worker is None:
        return url
    parsed = make_url(url)
    name = parsed.database
    if not name or name == ":memory:":
        return url
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(database=f"{name}_{worker}")
    elif parsed.get_backend_name() == "sqlite":
        path = Path(name)
        parsed = parsed.set(database=str(path.with_name(f"{path.stem}_{worker}{path.suffix}")))
    return parsed.render_as_string(hide_password=False)


def _admin_dsn(url: str) -> str:
    """The server's `postgres` database, for asyncpg, with the credentials of `url`."""
    return (
        make_url(url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


async def _recreate_database(url: str, *, create: bool) -> None:
    name = make_url(url).database
    if not (name and name.replace("_", "").isalnum()):
        raise ValueError(f"unexpected database name {name!r}")
    conn = await asyncpg.connect(_admin_dsn(url))
    try:
        # Only this worker's own database: FORCE ends its leftover connections, no one else's.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` to completion on a loop of its own, off the tests' event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def ensure_database(url: str) -> None:
    """A worker's PostgreSQL database is (re)created empty on first use in each run. Outside
    xdist the configured database is used as it is (the tests empty its tables)."""
    if WORKER is None or url in _created or not url.startswith("postgresql"):
        return
    _run_async(_recreate_database(url, create=True))
    _created.add(url)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for url in _created:  # a worker drops the databases it created (the next run recreates
        with contextlib.suppress(OSError, asyncpg.PostgresError):  # any it could not drop)
            _run_async(_recreate_database(url, create=False))
    _created.clear()


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite+aiosqlite:///{tmp}/test.db"


@pytest.fixture(scope="session")
def database_url(sqlite_url: str) -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    if not configured:
        return sqlite_url
    url = worker_database_url(configured)
    ensure_database(url)
    return url


def postgres_url() -> str | None:
    url = os.environ.get("TEST_POSTGRES_URL") or os.environ.get("TEST_DATABASE_URL")
    return worker_database_url(url) if url and url.startswith("postgresql") else None


def redis_url() -> str | None:
    return os.environ.get("TEST_REDIS_URL") or None


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {**TEST_SETTINGS, "DATABASE_URL": database_url, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def alembic_config(database_url: str) -> Config:
    """The project's migrations, run against `database_url`."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str) -> None:
    """Build the schema from the migrations (once per database per run)."""
    if database_url in _migrated:
        return
    ensure_database(database_url)
    command.upgrade(alembic_config(database_url), "head")
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
        if not stack:
            # Before the app starts: its background work (BACKGROUND_WORKER) would otherwise
            # hold locks on tables the TRUNCATE takes in another order (a deadlock).
            engine = create_engine(settings)
            try:
                await truncate_all(engine)
            finally:
                await engine.dispose()
        app = create_app(settings)
        manager = LifespanManager(app)
        await manager.__aenter__()
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def any_api(request: pytest.FixtureRequest, make_api: AppFactory, sqlite_url: str) -> Api:
    """The app on SQLite, and again on PostgreSQL (skipped, or failed, without it)."""
    if request.param == "sqlite":
        return await make_api(sqlite_url)
    pg_url: str = request.getfixturevalue("pg_url")
    return await make_api(pg_url)


@pytest.fixture
def pg_url() -> str:
    url = postgres_url()
    if url is None:
        skip_or_fail("PostgreSQL not configured (set TEST_POSTGRES_URL)")
    assert url is not None
    ensure_database(url)
    return url


@pytest.fixture
async def pg_api(make_api: AppFactory, pg_url: str) -> Api:
    return await make_api(pg_url)


@pytest.fixture
def redis_test_url() -> Iterator[str]:
    """TEST_REDIS_URL, for this test alone: a test holding it may flush the db."""
    url = redis_url()
    if url is None:
        skip_or_fail("Redis not configured (set TEST_REDIS_URL)")
    assert url is not None
    with redis_turn(url):
        yield url


@contextlib.contextmanager
def redis_turn(url: str) -> Iterator[None]:
    """One test at a time per Redis URL, across the xdist workers (and concurrent runs)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"minicrm-tests-redis-{digest}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
