"""The token signing key without SECRET_KEY: generated, kept in the database, never a constant.

With `SECRET_KEY` unset (what `.env.example` and `docker-compose.yml` give), the first process
on a database generates a random key and stores it there; every process on that database signs
and verifies with it. So no key that can be read in this repository signs a token, tokens
survive a restart, and instances on one database accept each other's tokens, while another
deployment (another database) has a key of its own."""

from __future__ import annotations

import ast
import asyncio
import re
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import jwt
import pytest
import yaml
from asgi_lifespan import LifespanManager
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import text

from app.cli import create_user
from app.core.config import Settings
from app.db.session import create_engine
from app.main import create_app
from app.services.signing import token_signing_key
from tests.conftest import (
    ROOT,
    AppFactory,
    make_settings,
    migrate,
    postgres_url,
    skip_or_fail,
    truncate_all,
)
from tests.support import PASSWORD, Api

# Everything written in the repository that could be (or has been) used as a key.
_PYTHON_SOURCES = ("app", "alembic", "bench", "tests")
_TEXT_SOURCES = (
    ".env.example",
    "docker-compose.yml",
    "Dockerfile",
    "docker/entrypoint.sh",
    "README.md",
    "docs",
)


def keys_in_the_source() -> set[str]:
    found: set[str] = set()
    for folder in _PYTHON_SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    for name in _TEXT_SOURCES:
        path = ROOT / name
        for file in path.rglob("*") if path.is_dir() else [path]:
            if file.is_file():
                found.update(re.split(r"[\s`'\"=:,;()<>\[\]{}|]+", file.read_text()))
    return {key for key in found if key and key.isprintable() and _encodable(key)}


def _encodable(key: str) -> bool:
    try:
        key.encode()
    except UnicodeEncodeError:  # lone surrogates, in tests of input handling
        return False
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url = postgres_url()
    if url is None:
        skip_or_fail("PostgreSQL not configured (set TEST_POSTGRES_URL)")
    assert url is not None
    return url


def generated_key_settings(database_url: str, **overrides: Any) -> Settings:
    """The default configuration: no SECRET_KEY."""
    return make_settings(database_url, SECRET_KEY=None, ENVIRONMENT="local", **overrides)


@asynccontextmanager
async def running_app(database_url: str) -> AsyncIterator[Api]:
    """An app with the default configuration, started and stopped (a process's lifetime)."""
    await anyio.to_thread.run_sync(migrate, database_url)
    app = create_app(generated_key_settings(database_url))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client=client, app=app)


async def me(api: Api, token: str) -> httpx.Response:
    return await api.client.get(api.url("/auth/me"), headers={"Authorization": f"Bearer {token}"})


async def stored_keys(api: Api) -> list[str]:
    async with api.app.state.resources.engine.connect() as conn:
        rows = await conn.execute(text("SELECT secret FROM signing_keys"))
        return [row[0] for row in rows]


def forged_access_token(user_id: int, session_id: int, key: str) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "sid": session_id,
        "type": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # short keys are the point
        return jwt.encode(claims, key, algorithm="HS256")


def session_of(token: str) -> int:
    """The login session a token names (tokens of versions before sessions were checked on
    every request named none: 1 then, which nothing reads)."""
    sid: int = jwt.decode(token, options={"verify_signature": False}).get("sid", 1)
    return sid


async def test_no_key_written_in_the_repository_signs_a_token(
    make_api: AppFactory, backend_url: str
) -> None:
    api = await make_api(backend_url, SECRET_KEY=None, ENVIRONMENT="local")
    owner = await api.register()
    assert (await me(api, owner.access_token)).status_code == 200
    candidates = keys_in_the_source()
    assert "development-only-secret-key-change-me-in-production" in candidates  # the old one

    accepted = []
    for key in sorted(candidates):
        forged = forged_access_token(owner.id, session_of(owner.access_token), key)
        response = await me(api, forged)
        if response.status_code != 401:
            accepted.append((key, response.status_code))
    assert accepted == []


async def test_the_key_is_random_and_stored_with_the_data(
    make_api: AppFactory, backend_url: str
) -> None:
    api = await make_api(backend_url, SECRET_KEY=None, ENVIRONMENT="local")
    owner = await api.register()
    [key] = await stored_keys(api)

    assert len(key) >= 64  # 48 random bytes
    assert key not in keys_in_the_source()
    # what the app signs with: a token signed with the stored key is accepted
    forged = forged_access_token(owner.id, session_of(owner.access_token), key)
    assert (await me(api, forged)).status_code == 200


async def test_two_instances_on_one_database_accept_each_others_tokens(
    make_api: AppFactory, backend_url: str
) -> None:
    first = await make_api(backend_url, SECRET_KEY=None, ENVIRONMENT="local")
    second = await make_api(backend_url, SECRET_KEY=None, ENVIRONMENT="local")
    on_first = await first.register()
    on_second = await second.register()

    assert (await me(second, on_first.access_token)).status_code == 200
    assert (await me(first, on_second.access_token)).status_code == 200
    assert len(await stored_keys(first)) == 1


async def test_a_restarted_app_accepts_the_tokens_it_issued_before(backend_url: str) -> None:
    async with running_app(backend_url) as before:
        user = await before.register()
    async with running_app(backend_url) as after:
        response = await me(after, user.access_token)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == user.id
        refreshed = await after.client.post(
            after.url("/auth/refresh"), json={"refresh_token": user.refresh_token}
        )
        assert refreshed.status_code == 200, refreshed.text


async def test_processes_starting_together_agree_on_one_key(backend_url: str) -> None:
    """Workers of a fresh deployment start at once: one key wins, and all of them use it."""
    await anyio.to_thread.run_sync(migrate, backend_url)
    settings = generated_key_settings(backend_url)
    engines = [create_engine(settings) for _ in range(6)]
    try:
        async with engines[0].begin() as conn:
            await conn.execute(text("DELETE FROM signing_keys"))
        keys = await asyncio.gather(*(token_signing_key(settings, e) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()

    assert len(set(keys)) == 1


async def test_another_deployment_has_another_key(tmp_path: Path, sqlite_url: str) -> None:
    """Two fresh databases, same user id and session id: a token of one opens nothing in the
    other (with a key shared by every deployment, it would)."""
    other_url = f"sqlite+aiosqlite:///{tmp_path}/other.db"
    async with running_app(sqlite_url) as one, running_app(other_url) as other:
        for api in (one, other):
            await truncate_all(api.app.state.resources.engine)  # keeps each one's signing key
        here = await one.register(email="same@example.com")
        there = await other.register(email="same@example.com")
        assert (here.id, session_of(here.access_token)) == (
            there.id,
            session_of(there.access_token),
        )

        assert (await me(one, here.access_token)).status_code == 200
        assert (await me(other, here.access_token)).status_code == 401


async def test_the_cli_signs_with_the_stored_key(make_api: AppFactory, backend_url: str) -> None:
    api = await make_api(backend_url, SECRET_KEY=None, ENVIRONMENT="local")
    settings = generated_key_settings(backend_url)

    registration = await create_user(
        settings, f"cli-{uuid.uuid4().hex[:8]}@example.com", "Cli", PASSWORD, "Cli org"
    )

    response = await me(api, registration.tokens.access_token)
    assert response.status_code == 200, response.text
    assert len(await stored_keys(api)) == 1


def test_docker_compose_publishes_the_api_on_localhost_only_by_default() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = [
        str(port) for service in compose["services"].values() for port in service.get("ports", [])
    ]

    assert published == ["${APP_PUBLISH_ADDRESS:-127.0.0.1}:8000:8000"]
    assert "SECRET_KEY" not in (compose["services"]["app"].get("environment") or {})
