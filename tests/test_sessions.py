"""Database sessions: read-only requests, writes refused there, and dropped connections.

- GET and HEAD get a read session: on PostgreSQL it sends no BEGIN/COMMIT, on SQLite it is
  the usual transaction; either way it refuses to write (ORM flush or INSERT/UPDATE/DELETE);
- other methods get a transaction;
- on SQLite a read session begins with a plain (deferred) BEGIN, so reads do not queue behind
  writers; writes take the write lock up front with BEGIN IMMEDIATE;
- connections that PostgreSQL closed (a restart, `pg_terminate_backend`) are replaced at
  checkout, so requests after it still succeed, reads and writes alike; a connection idle
  longer than DB_PING_AFTER_IDLE_SECONDS is pinged first, and replaced if the ping fails.

`test_requests_survive_connections_closed_by_postgresql` ends every other client backend of
the test database: the suite runs its tests one at a time.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.resources import Resources
from app.db.session import ReadOnlySessionError
from app.models import Organization
from tests.conftest import AppFactory
from tests.support import Api, create_contact, create_deal, read_deal, statements_sent


def resources_of(api: Api) -> Resources:
    resources: Resources = api.app.state.resources
    return resources


async def in_transaction(factory: async_sessionmaker[AsyncSession]) -> bool:
    async with factory() as session:
        await session.execute(text("SELECT 1"))
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        if connection.dialect.name == "postgresql":
            return bool(driver.is_in_transaction())
        return bool(driver.in_transaction)


async def test_reads_on_postgresql_run_without_a_transaction(pg_api: Api) -> None:
    resources = resources_of(pg_api)
    assert await in_transaction(resources.read_session_factory) is False
    assert await in_transaction(resources.session_factory) is True


async def test_reads_on_sqlite_keep_their_transaction(
    make_api: AppFactory, sqlite_url: str
) -> None:
    resources = resources_of(await make_api(sqlite_url))
    assert await in_transaction(resources.read_session_factory) is True


async def test_a_read_session_refuses_to_write(api: Api) -> None:
    factory = resources_of(api).read_session_factory
    async with factory() as session:
        session.add(Organization(name="Sneaky"))
        with pytest.raises(ReadOnlySessionError):
            await session.flush()
    async with factory() as session:
        with pytest.raises(ReadOnlySessionError):
            await session.execute(insert(Organization).values(name="Sneaky"))
    async with factory() as session:
        with pytest.raises(ReadOnlySessionError):
            await session.execute(update(Organization).values(name="Renamed"))
    async with resources_of(api).session_factory() as session:
        count = await session.scalar(text("SELECT count(*) FROM organizations"))
    assert count == 0


async def test_requests_survive_connections_closed_by_postgresql(pg_api: Api) -> None:
    owner = await pg_api.register()
    contact_id = await create_contact(owner)
    deal = await create_deal(owner, contact_id)
    # fill the pool with several connections
    reads = await asyncio.gather(*(read_deal(owner, deal["id"]) for _ in range(6)))
    assert all(body["id"] == deal["id"] for body in reads)

    engine = resources_of(pg_api).engine
    async with engine.connect() as connection:
        terminated = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        )
        assert terminated is not None
        assert terminated >= 1
        for _ in range(100):  # until the backends are gone
            left = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            )
            if left == 0:
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # the event loop reads the closed sockets

    reads = await asyncio.gather(*(read_deal(owner, deal["id"]) for _ in range(6)))
    assert all(body["id"] == deal["id"] for body in reads)
    created = await asyncio.gather(*(create_deal(owner, contact_id) for _ in range(3)))
    assert len({body["id"] for body in created}) == 3


async def test_get_requests_use_the_read_session_and_writes_a_transaction(api: Api) -> None:
    owner = await api.register()
    contact_id = await create_contact(owner)
    engine = resources_of(api).engine
    postgresql = engine.dialect.name == "postgresql"

    with statements_sent(engine) as reads:
        await read_deal(owner, (await create_deal(owner, contact_id))["id"])
    with statements_sent(engine) as get_only:
        response = await owner.get("/deals")
        assert response.status_code == 200
    with statements_sent(engine) as writes:
        await create_deal(owner, contact_id)

    assert get_only
    assert reads
    if postgresql:
        assert {s.isolation_level for s in get_only} == {"AUTOCOMMIT"}
        assert {s.isolation_level for s in writes} == {None}
    else:
        assert [s.sql for s in get_only if s.sql.startswith("BEGIN")] == ["BEGIN"]
        assert [s.sql for s in writes if s.sql.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]


async def test_a_connection_idle_past_the_limit_is_pinged_and_replaced_if_dead(
    make_api: AppFactory, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(pg_url, DB_PING_AFTER_IDLE_SECONDS=0)
    owner = await api.register()
    contact_id = await create_contact(owner)
    pings: list[bool] = []
    original = AsyncAdapt_asyncpg_connection.ping

    def failing_once(self: AsyncAdapt_asyncpg_connection) -> None:
        pings.append(True)
        if len(pings) == 1:  # as a connection dropped silently by the network would
            raise ConnectionError("ping failed")
        original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", failing_once)
    deal = await create_deal(owner, contact_id)  # draws a pooled connection: pinged, fails
    assert (await read_deal(owner, deal["id"]))["id"] == deal["id"]
    assert len(pings) >= 2  # the failed ping, then pings of later idle connections

    pings.clear()
    busy = await make_api(pg_url)  # the default limit: a connection reused at once is not pinged
    owner_b = await busy.register()
    await create_contact(owner_b)
    assert pings == []
