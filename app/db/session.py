"""Engine and session factories. Created in the app's lifespan, never at import time."""

from __future__ import annotations

import select
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

from app.core.config import Settings


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    url = url or settings.DATABASE_URL
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url, settings.SQLITE_BUSY_TIMEOUT_MS)
    engine = create_async_engine(
        url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT_SECONDS,
        pool_recycle=1800,
    )
    ping_after_idle = settings.DB_PING_AFTER_IDLE_SECONDS

    # A cheaper `pool_pre_ping`, which on asyncpg costs three round trips (BEGIN, `;`,
    # ROLLBACK) on every checkout. A connection the server closed (a restart, an ended
    # backend) is known without a round trip and is replaced at once: asyncpg knows once it
    # has read the end of the connection; until then the socket tells (`_hung_up`). Only a
    # connection that sat idle in the pool for a while is pinged: that is when a firewall or
    # NAT may have dropped it silently. A busy pool reuses connections within milliseconds and
    # never pays for the ping. Raising DisconnectionError makes the pool discard the
    # connection and check out another instead of failing the request.
    @event.listens_for(engine.sync_engine, "checkout")
    def _check_connection(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _: PoolProxiedConnection
    ) -> None:
        connection = record.driver_connection
        if connection is not None and (connection.is_closed() or _hung_up(connection)):
            raise DisconnectionError("the database closed this connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since >= ping_after_idle:
            try:
                cast(Any, dbapi_connection).ping()
            except Exception as exc:
                raise DisconnectionError("the connection failed its ping") from exc
        if record.info.pop(_PLANS_FOR_VALUES, False) and connection is not None:
            # The last request planned every statement for its values (`plan_for_values`);
            # this one gets the default back: cached plans for its point lookups.
            try:
                await_only(connection.execute("RESET plan_cache_mode"))
            except Exception as exc:
                raise DisconnectionError("the connection failed its reset") from exc
        record.info[_STATEMENTS_RUN] = 0

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _count_statement(connection: Connection, *_: object) -> None:
        info = connection.info
        info[_STATEMENTS_RUN] = info.get(_STATEMENTS_RUN, 0) + 1

    @event.listens_for(engine.sync_engine, "checkin")
    def _mark_idle(_: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _recognise_lost_connection(context: ExceptionContext) -> None:
        # SQLAlchemy takes an asyncpg error for a disconnect only if asyncpg already marked the
        # connection closed. A backend ended while its connection sat idle leaves asyncpg
        # holding the server's last message and answering the next statement with "cannot
        # switch to state ...": marked here, the connection is discarded (not handed to the
        # next request) and the error says `connection_invalidated`.
        if not context.is_disconnect and is_lost_connection(context.original_exception):
            context.is_disconnect = True
        if context.is_disconnect and _nothing_ran(context.connection):
            # The connection was already gone when the request's first statement went out
            # (the server ended it between checkout and use): the request did nothing, and
            # may run again on a fresh connection (`lost_before_first_statement`).
            for exc in (context.original_exception, context.sqlalchemy_exception):
                if exc is not None:
                    setattr(exc, _NOTHING_RAN, True)

    return engine


async def plan_for_values(session: AsyncSession) -> None:
    """Plan this request's statements for their parameter values, not once for all values.

    asyncpg prepares every statement, and after five runs PostgreSQL may keep one generic
    plan for it, costed without the values. For a point lookup that is right and saves the
    planning. For a filtered list it is not: a generic plan of `status = $2 AND amount
    BETWEEN $3 AND $4 ORDER BY created_at` guesses a handful of matching rows and sorts
    them, and when 300,000 match, page 1 takes 440 ms instead of 0.1 ms. Lists call this
    before their statements: the connection plans each statement for its values until it
    is next checked out, when `_check_connection` puts the default back. No-op on SQLite,
    which plans every statement anyway."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return
    info = connection.info  # the pooled connection's, kept across checkouts
    if info.get(_PLANS_FOR_VALUES):
        return
    ran = info.get(_STATEMENTS_RUN, 0)
    await connection.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
    # Not one of the request's statements: a connection lost after it is still lost
    # "before the first statement" (`lost_before_first_statement`), and the request retried.
    info[_STATEMENTS_RUN] = ran
    info[_PLANS_FOR_VALUES] = True


_PLANS_FOR_VALUES = "minicrm_plans_for_values"
_IDLE_SINCE = "minicrm_idle_since"
_STATEMENTS_RUN = "minicrm_statements_run"  # since checkout
_NOTHING_RAN = "minicrm_lost_before_first_statement"
# The server ended the session: an administrator, a restart, a failover, idle_session_timeout.
_SESSION_ENDED = (
    asyncpg.PostgresConnectionError,  # class 08, including ConnectionDoesNotExistError
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.IdleSessionTimeoutError,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what led to it, each once."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _checkout_gave_up(exc: BaseException) -> bool:
    """The pool's own error when every connection it tried at checkout was found closed
    (`_check_connection`: the server ending connections as fast as they are made): no
    statement of the request reached the database."""
    return isinstance(exc, InvalidRequestError) and str(exc).startswith("This connection is closed")


def is_lost_connection(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database connection is gone or could not
    be made, rather than that a statement was wrong: the request can be answered 503 and
    tried again."""
    for current in _causes(exc):
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if _checkout_gave_up(current):
            return True
        if isinstance(current, _SESSION_ENDED):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "closed" in str(current):
            return True
        if isinstance(current, asyncpg.InternalClientError) and "another operation" in str(current):
            return True  # the protocol state a message from an ending server leaves behind
        if isinstance(current, OSError) and _raised_by_the_driver(current):
            return True  # a refused or timed-out connect, a reset socket
    return False


def is_write_conflict(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is PostgreSQL rolling the transaction back to let a
    concurrent one through (a deadlock, a serialization failure): nothing was kept, and the
    request may be sent again."""
    return any(
        isinstance(current, asyncpg.exceptions.TransactionRollbackError) for current in _causes(exc)
    )


def lost_before_first_statement(exc: BaseException) -> bool:
    """Whether `exc` is a lost connection met by the first statement after checkout: nothing
    of the request reached the database, so it may safely run again on a fresh connection.
    A connection lost later may have taken part of a request's work with it (rolled back,
    or a commit whose fate is unknown): that one is answered 503."""
    return any(
        getattr(current, _NOTHING_RAN, False) or _checkout_gave_up(current)
        for current in _causes(exc)
    )


def _nothing_ran(connection: Connection | None) -> bool:
    if connection is None:
        return False  # the connect itself failed: retrying at once would fail again
    try:
        return connection.info.get(_STATEMENTS_RUN) == 0
    except Exception:  # an invalidated connection may refuse to say
        return False


def _raised_by_the_driver(exc: BaseException) -> bool:
    traceback = exc.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(("asyncpg", "sqlalchemy", "aiosqlite")):
            return True
        traceback = traceback.tb_next
    return False


def _hung_up(connection: Any) -> bool:
    """Whether the server closed this idle connection, or sent on it, without asyncpg having
    read it yet. An idle connection is owed nothing: anything readable (the end of the
    connection, or the server's last message before it) means it is gone. One `poll` of the
    socket with a zero timeout (a single system call, no round trip)."""
    transport = getattr(connection, "_transport", None)
    raw = transport.get_extra_info("socket") if transport is not None else None
    if raw is None:
        return False
    fileno = raw.fileno()
    if fileno < 0:
        return True  # the socket is closed
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)  # hang-ups always reported
    try:
        return bool(poller.poll(0))
    except OSError:
        return True


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
        # Read sessions never write (they refuse to): a plain BEGIN, so that in WAL mode they
        # read their snapshot without queueing behind writers.
        read_only = conn.get_execution_options().get(_READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

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


def create_read_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` (the same pool) for requests that only read (GET, HEAD).

    On PostgreSQL they run without BEGIN/COMMIT: at READ COMMITTED every statement takes its
    own snapshot whether or not it is inside a transaction, so a read-only transaction only
    adds two round trips. The isolation level is a flag on the asyncpg connection, set at
    checkout and reset at return without a round trip.

    SQLite keeps its transaction (its driver-level isolation switch would undo the explicit
    BEGIN handling in `_create_sqlite_engine`) but begins it deferred, without the write lock."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine.execution_options(**{_READ_ONLY_OPTION: True})


def create_read_session_factory(read_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on `create_read_engine`'s engine, which refuse to write.

    The guard against writes sees ORM flushes and INSERT/UPDATE/DELETE statements run through
    the session; raw SQL (`text()`, `exec_driver_sql`) and locking reads are not checked, and
    none is used in a read path."""
    return create_session_factory(read_engine, ReadOnlySession)


_READ_ONLY_OPTION = "minicrm_read_only"


AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT_KEY = "after_commit"


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this request's transaction has committed (never if it rolls back).

    Used for side effects that must not be seen before the data is, such as cache invalidation
    (`app.services.read_models`).
    """
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        await callback()


def discard_after_commit(session: AsyncSession) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)
