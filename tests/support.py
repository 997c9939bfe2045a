"""Helpers shared by the tests: an API client wrapper that logs in through the real endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

PASSWORD = "StrongPassword123"
_emails = count(1)


@dataclass
class Api:
    """A client of the running app, plus helpers that go through the real endpoints."""

    client: httpx.AsyncClient
    app: FastAPI
    prefix: str = "/api/v1"
    _users: dict[str, dict[str, Any]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.prefix}{path}"

    async def register(
        self, email: str | None = None, organization_name: str = "Acme", name: str = "User"
    ) -> User:
        email = email or f"user{next(_emails)}@example.com"
        response = await self.client.post(
            self.url("/auth/register"),
            json={
                "email": email,
                "password": PASSWORD,
                "name": name,
                "organization_name": organization_name,
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return User(
            api=self,
            id=body["user"]["id"],
            email=email,
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            organization_id=body["organization"]["id"],
        )

    async def member_of(self, owner: User, role: str, email: str | None = None) -> User:
        """Register a new user and add them to `owner`'s organization with `role`."""
        user = await self.register(email=email, organization_name="Own org")
        response = await self.client.post(
            self.url(f"/organizations/{owner.organization_id}/members"),
            json={"email": user.email, "role": role},
            headers=owner.headers(),
        )
        assert response.status_code == 201, response.text
        user.organization_id = owner.organization_id
        return user


@dataclass
class User:
    api: Api
    id: int
    email: str
    access_token: str
    refresh_token: str
    organization_id: int

    def headers(self, organization_id: int | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.access_token}",
            "X-Organization-Id": str(organization_id or self.organization_id),
        }

    def _merged(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.headers(), **(kwargs.pop("headers", None) or {})}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._merged(kwargs)
        return await self.api.client.get(self.api.url(path), headers=headers, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        headers = self._merged(kwargs)
        return await self.api.client.post(self.api.url(path), json=json, headers=headers, **kwargs)

    async def patch(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        headers = self._merged(kwargs)
        return await self.api.client.patch(self.api.url(path), json=json, headers=headers, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._merged(kwargs)
        return await self.api.client.delete(self.api.url(path), headers=headers, **kwargs)


def engine_of(api: Api) -> AsyncEngine:
    """The engine of the app under test (its write engine)."""
    engine: AsyncEngine = api.app.state.resources.engine
    return engine


def sessions_of(api: Api) -> async_sessionmaker[AsyncSession]:
    """The app's own session factory: rows written with it are written as the app writes."""
    factory: async_sessionmaker[AsyncSession] = api.app.state.resources.session_factory
    return factory


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"]
    assert body["title"]
    assert body["detail"]
    assert body["type"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return body


async def count_rows(engine: AsyncEngine, table: str, where: str = "1=1", **params: Any) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE {where}"),  # noqa: S608
            params,
        )
        return int(result.scalar_one())


async def count_live(engine: AsyncEngine, table: str, where: str = "1=1", **params: Any) -> int:
    """`count_rows` of the rows not in the trash (contacts, deals, tasks)."""
    return await count_rows(engine, table, f"({where}) AND deleted_at IS NULL", **params)


async def count_trashed(engine: AsyncEngine, table: str, where: str = "1=1", **params: Any) -> int:
    """`count_rows` of the rows in the trash (contacts, deals, tasks)."""
    return await count_rows(engine, table, f"({where}) AND deleted_at IS NOT NULL", **params)


@dataclass
class Team:
    """An organization's owner and one member of every other role."""

    owner: User
    admin: User
    manager: User
    member: User

    def by_role(self, role: str) -> User:
        user: User = getattr(self, role)
        return user


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: compare before and after a request."""
    from app.models import Base

    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            order = ", ".join(str(i + 1) for i in range(len(table.columns)))
            result = await conn.execute(
                text(f"SELECT * FROM {table.name} ORDER BY {order}")  # noqa: S608
            )
            rows[table.name] = [tuple(row) for row in result]
    return rows


# --- CRM shortcuts: each asserts success, so a test states only what it is about -----------


async def create_contact(user: User, name: str = "Client") -> int:
    response = await user.post("/contacts", json={"name": name})
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


async def create_deal(user: User, contact_id: int, title: str = "Deal", **fields: Any) -> Any:
    response = await user.post("/deals", json={"contact_id": contact_id, "title": title, **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def patch_deal(user: User, deal_id: int, **fields: Any) -> Any:
    response = await user.patch(f"/deals/{deal_id}", json=fields)
    assert response.status_code == 200, response.text
    return response.json()


async def read_deal(user: User, deal_id: int) -> Any:
    response = await user.get(f"/deals/{deal_id}")
    assert response.status_code == 200, response.text
    return response.json()


# --- what the app sends to the database -----------------------------------------------------


@dataclass(frozen=True)
class SentStatement:
    sql: str
    isolation_level: str | None  # as asked for by the connection's execution options


@contextmanager
def statements_sent(
    engine: AsyncEngine, keep: Callable[[str], bool] = lambda _: True
) -> Iterator[list[SentStatement]]:
    """The statements (those `keep` accepts) sent through `engine` meanwhile."""
    seen: list[SentStatement] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if keep(statement):
            level = conn.get_execution_options().get("isolation_level")
            seen.append(SentStatement(statement, level))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def run_minicrm(
    env: dict[str, str], *args: str, cwd: Path, timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m app.cli *args` (this interpreter, the app's own CLI) in a child process with
    exactly `env` plus `extra_env`, from `cwd` (no stray .env: settings come from `env`)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "app.cli", *args],
        env={**env, **extra_env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def run_cli(api: Api, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`run_minicrm` on `api`'s database, with `env` added, off the event loop."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))},
        "DATABASE_URL": api.app.state.settings.DATABASE_URL,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    return await anyio.to_thread.run_sync(lambda: run_minicrm(environment, *args, cwd=cwd))
