"""Engine and session factories. Created in the app's lifespan, never at import time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.core.config import Settings


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    url = url or settings.DATABASE_URL
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url, settings.SQLITE_BUSY_TIMEOUT_MS)
    engine = create_async_engine(
        url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_recycle=1800,
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _discard_closed(
        _: DBAPIConnection, record: ConnectionPoolEntry, __: PoolProxiedConnection
    ) -> None:
        # A cheaper `pool_pre_ping`. When PostgreSQL restarts or ends a backend, it closes the
        # socket and asyncpg marks the connection closed; such a connection is replaced here
        # (the pool retries the checkout) instead of failing the request that drew it. The
        # stock pre-ping costs three round trips per checkout on asyncpg (BEGIN, `;`,
        # ROLLBACK) to also catch a peer that vanished without closing the socket, which a
        # local or private-network database does not do.
        connection = record.driver_connection
        if connection is not None and connection.is_closed():
            raise DisconnectionError("the database closed this connection")

    return engine


def _create_sqlite_engine(url: str, busy_timeout_ms: int) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see `_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if ":memory:" not in url:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front. A deferred transaction that reads and
        # then writes fails at once with SQLITE_BUSY when another writer got in between (the busy
        # timeout does not apply to lock upgrades); taking the lock first makes writers queue.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_session_factory(
    engine: AsyncEngine, sync_session_class: type[Session] = Session
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, sync_session_class=sync_session_class
    )


class ReadOnlySessionError(RuntimeError):
    """A GET or HEAD handler tried to write: a programming error, answered as a 500."""


class ReadOnlySession(Session):
    """The session of a read-only request. Without a transaction a write could not be rolled
    back, so it refuses them (see the listeners below)."""


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, *_: object) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("a read-only request tried to write")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_write_statement(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlySessionError("a read-only request tried to write")


def create_read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read (GET, HEAD).

    On PostgreSQL they run without BEGIN/COMMIT: at READ COMMITTED every statement takes its
    own snapshot whether or not it is inside a transaction, so a read-only transaction only
    adds two round trips. The pool is shared with `engine`; the isolation level is a flag on
    the asyncpg connection, set at checkout and reset at return without a round trip.

    SQLite keeps the one engine: its driver-level isolation switch would undo the explicit
    `BEGIN IMMEDIATE` handling in `_create_sqlite_engine`."""
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return create_session_factory(engine, ReadOnlySession)


AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT_KEY = "after_commit"


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this request's transaction has committed (never if it rolls back).

    Used for side effects that must not be seen before the data is, such as cache invalidation.
    """
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        await callback()


def discard_after_commit(session: AsyncSession) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)
