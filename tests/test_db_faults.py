"""The database failing under the app: connections ended by the server, a server that is down.

No request may answer 500 for it. A request whose connection died before it ran anything is
served on a fresh connection; one that lost its connection mid-way answers 503
`DATABASE_UNAVAILABLE` with `Retry-After`, and leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from app.core.handlers import register_exception_handlers
from app.main import create_app
from tests.conftest import AppFactory, make_settings
from tests.support import Api, User, assert_problem, count_rows, create_contact, create_deal

CLIENTS = 30
REQUESTS_PER_CLIENT = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class BackendTerminator:
    """Ends every other backend of one database, over and over, as an operator (or a failover)
    would: `pg_terminate_backend`, never touching another database's sessions."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.database = url.database
        self.dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.terminated = 0
        self._stop = asyncio.Event()

    async def run(self, every: float) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                await self._terminate(conn)
                pause = every * random.uniform(0.5, 1.5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)
        finally:
            await conn.close()

    async def once(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await self._terminate(conn)
        finally:
            await conn.close()

    async def _terminate(self, conn: asyncpg.Connection) -> None:
        self.terminated += await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            self.database,
        )

    def stop(self) -> None:
        self._stop.set()


@pytest.mark.postgres
async def test_ended_backends_answer_200_or_503_never_500_and_write_nothing_half(
    make_api: AppFactory, pg_url: str
) -> None:
    api = await make_api(pg_url, DB_POOL_SIZE=10)
    owner = await api.register()
    contact = await create_contact(owner)
    deal_ids = [(await create_deal(owner, contact, f"Deal {i}"))["id"] for i in range(5)]
    engine = api.app.state.resources.engine
    tasks_before = await count_rows(engine, "tasks")

    statuses: Counter[int] = Counter()
    created_task_ids: list[int] = []
    problems: list[str] = []

    async def client(number: int) -> None:
        for index in range(REQUESTS_PER_CLIENT):
            if index % 2:
                response = await owner.post(
                    "/tasks",
                    json={
                        "deal_id": deal_ids[number % len(deal_ids)],
                        "title": f"T{number}.{index}",
                    },
                )
                expected_ok = 201
            else:
                response = await owner.get("/deals", params={"page_size": 20})
                expected_ok = 200
            statuses[response.status_code] += 1
            if response.status_code == expected_ok:
                if expected_ok == 201:
                    created_task_ids.append(response.json()["id"])
            elif response.status_code == 503:
                body = response.json()
                if (
                    body.get("code") != "DATABASE_UNAVAILABLE"
                    or not response.headers.get("retry-after", "").isdigit()
                ):
                    problems.append(f"{response.status_code} {response.headers} {response.text}")
            else:
                problems.append(f"{response.status_code} {response.text}")

    terminator = BackendTerminator(pg_url)
    storm = asyncio.create_task(terminator.run(every=0.3))
    try:
        await asyncio.gather(*(client(number) for number in range(CLIENTS)))
    finally:
        terminator.stop()
        await storm

    assert not problems, f"{len(problems)} bad answers, e.g. {problems[:3]}; all: {statuses}"
    assert terminator.terminated > 0, "no backend was ended: the test tested nothing"
    assert statuses[200] + statuses[201] > 0, statuses
    # Nothing half-written: every task has its timeline entry, and every 201 was saved.
    tasks = await count_rows(engine, "tasks") - tasks_before
    activities = await count_rows(engine, "activities", "type = 'task_created'")
    assert tasks == activities
    assert len(created_task_ids) <= tasks
    for task_id in created_task_ids:
        assert await count_rows(engine, "tasks", "id = :id", id=task_id) == 1


def end_backend(dsn: str, pid: int) -> None:
    """`pg_terminate_backend`, waiting until the backend is gone, without letting this event
    loop run meanwhile: the app's connection does not learn of it before its next use."""

    async def terminate() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, terminate()).result()


@pytest.mark.postgres
async def test_a_request_whose_connection_died_before_its_first_statement_runs_again(
    make_api: AppFactory, pg_url: str
) -> None:
    api = await make_api(pg_url)
    owner = await api.register()
    engine = api.app.state.resources.engine
    dsn = BackendTerminator(pg_url).dsn
    ended: list[int] = []

    def end_the_first_checkout(_: Any, record: Any, __: Any) -> None:
        # After the app's own checkout check passed: the backend ends between checkout and
        # the request's first statement.
        if not ended:
            ended.append(record.driver_connection.get_server_pid())
            end_backend(dsn, ended[0])

    event.listen(engine.sync_engine, "checkout", end_the_first_checkout)
    try:
        for method, path, body, status in (
            ("GET", "/contacts", None, 200),
            ("POST", "/contacts", {"name": "Once"}, 201),
            ("GET", "/contacts", None, 200),
        ):
            ended.clear()
            response = await owner.api.client.request(
                method, api.url(path), json=body, headers=owner.headers()
            )
            assert response.status_code == status, response.text
            assert ended, "no backend was ended: the test tested nothing"
    finally:
        event.remove(engine.sync_engine, "checkout", end_the_first_checkout)

    # The write ran once: its first run reached nothing.
    assert response.json()["total"] == 1
    assert await count_rows(engine, "contacts", "name = 'Once'") == 1


async def test_a_pool_that_finds_every_connection_closed_at_checkout_is_not_a_500(
    make_api: AppFactory, pg_url: str
) -> None:
    """The server ending connections as fast as the pool makes them: each one the pool tries
    at checkout is found closed, and after its attempts it gives up ("This connection is
    closed") before any statement ran. The request runs again once (200), and if the pool
    gives up again it is answered 503 `DATABASE_UNAVAILABLE`, never 500."""
    api = await make_api(pg_url)
    owner = await api.register()
    engine = api.app.state.resources.engine
    refusals = {"left": 0}

    def found_closed(*_: Any) -> None:
        if refusals["left"] > 0:
            refusals["left"] -= 1
            raise DisconnectionError("the database closed this connection")

    event.listen(engine.sync_engine, "checkout", found_closed)
    try:
        refusals["left"] = 2  # the pool's two attempts at one checkout
        response = await owner.get("/contacts")
        assert response.status_code == 200, response.text
        assert refusals["left"] == 0, "the pool was not made to give up: nothing was tested"
        refusals["left"] = 1_000
        assert_problem(await owner.get("/contacts"), 503, "DATABASE_UNAVAILABLE")
    finally:
        event.remove(engine.sync_engine, "checkout", found_closed)


# --- the database is down ---------------------------------------------------------------------


async def app_on(database_url: str, **overrides: Any) -> tuple[LifespanManager, httpx.AsyncClient]:
    app = create_app(make_settings(database_url, **overrides))
    manager = LifespanManager(app)
    await manager.__aenter__()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://testserver",
    )
    return manager, client


async def test_with_the_database_down_ready_and_requests_answer_503(api: Api, owner: User) -> None:
    """A PostgreSQL server nobody listens for: readiness says so, and a request that needs
    the database answers 503 with Retry-After (its token was minted while it was up)."""
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/minicrm"
    manager, client = await app_on(dead)
    try:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
        assert (await client.get("/health")).status_code == 200  # liveness needs no database

        for response in (
            await client.get("/api/v1/contacts", headers=owner.headers()),
            await client.post("/api/v1/contacts", json={"name": "X"}, headers=owner.headers()),
            await client.post(
                "/api/v1/auth/login", json={"email": owner.email, "password": "Whatever123"}
            ),
        ):
            assert_problem(response, 503, "DATABASE_UNAVAILABLE")
            assert response.headers["retry-after"].isdigit()
    finally:
        await client.aclose()
        await manager.__aexit__(None, None, None)


async def test_a_transaction_rolled_back_for_a_deadlock_is_503_write_conflict(
    pg_api: Api,
) -> None:
    """PostgreSQL ends one of two deadlocked writes (or a serialization failure) by rolling it
    back: nothing of it was kept, so it is answered as the other transient database troubles
    are, 503 with Retry-After, never 500. The error is raised by PostgreSQL itself here."""
    engine = pg_api.app.state.resources.engine
    app = FastAPI()
    register_exception_handlers(app)

    @app.get("/conflict/{code}")
    async def conflict(code: str) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                text(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$")
            )

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for code in ("40P01", "40001"):  # deadlock_detected, serialization_failure
            response = await client.get(f"/conflict/{code}")
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "WRITE_CONFLICT"
            assert response.headers["Retry-After"] == "1"
        response = await client.get("/conflict/22012")  # division_by_zero: a bug
        assert (response.status_code, response.json()["code"]) == (500, "INTERNAL_ERROR")
