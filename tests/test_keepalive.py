"""The server keeps idle keep-alive connections open longer than clients and load balancers do.

uvicorn's own default (5 s) closes a connection a client still holds open: a request sent at
that moment is lost (the client sees a reset, the app never sees the request). The setting
`KEEPALIVE_TIMEOUT_SECONDS` (default 75) reaches uvicorn from `minicrm serve` (so `make run`)
and from the Docker entrypoint.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import cli
from app.core.config import Settings, get_settings
from tests.test_entrypoint import (
    Start,
    command_line,
    entrypoint_env,
    free_port,
    start_entrypoint,  # noqa: F401 - the fixture
    wait_for_health,
)

ROOT = Path(__file__).resolve().parent.parent


def test_the_default_outlasts_common_load_balancer_idle_timeouts() -> None:
    assert Settings(_env_file=None).KEEPALIVE_TIMEOUT_SECONDS == 75  # type: ignore[call-arg]


# --- minicrm serve (and make run, which runs it) ----------------------------------------------


@pytest.fixture
def uvicorn_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """What `minicrm serve` would start uvicorn with (neither uvicorn nor migrations run)."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("REDIS_URL", "KEEPALIVE_TIMEOUT_SECONDS", "WEB_CONCURRENCY", "HOST", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}")
    monkeypatch.setenv("ENVIRONMENT", "test")
    options: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: options.update(kwargs))
    monkeypatch.setattr(cli, "run_migrations", lambda settings: None)
    get_settings.cache_clear()
    yield options
    get_settings.cache_clear()


def test_serve_gives_uvicorn_the_default_keepalive(uvicorn_options: dict[str, Any]) -> None:
    assert cli.main(["serve", "--no-migrate"]) == 0

    assert uvicorn_options["timeout_keep_alive"] == 75


def test_serve_gives_uvicorn_the_configured_keepalive(
    uvicorn_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPALIVE_TIMEOUT_SECONDS", "120")

    assert cli.main(["serve", "--no-migrate"]) == 0

    assert uvicorn_options["timeout_keep_alive"] == 120


def test_make_run_serves_through_minicrm_serve() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]

    assert "minicrm serve" in recipe
    assert "uvicorn" not in recipe  # which would start with uvicorn's own 5 s


# --- the Docker entrypoint ---------------------------------------------------------------------


def exchange(sock: socket.socket) -> bytes:
    """One GET /health on an open connection; the response, or b"" if the server closed it."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    data = b""
    while b'{"status":"ok"}' not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


async def test_entrypoint_gives_uvicorn_the_default_keepalive(
    tmp_path: Path,
    start_entrypoint: Start,  # noqa: F811 - the fixture imported above
) -> None:
    port = free_port()
    server = start_entrypoint(
        entrypoint_env(
            f"sqlite+aiosqlite:///{tmp_path / 'keepalive.db'}", PORT=str(port), WEB_CONCURRENCY="1"
        )
    )
    await wait_for_health(server, port)

    assert "--timeout-keep-alive 75" in command_line(server.process.pid)


async def test_entrypoint_keepalive_setting_decides_when_idle_connections_close(
    tmp_path: Path,
    start_entrypoint: Start,  # noqa: F811 - the fixture imported above
) -> None:
    """Set to 1 s, a connection idle for 3 s is closed by the server; under uvicorn's own
    default (5 s) it would still be open. The setting is what uvicorn runs with."""
    port = free_port()
    server = start_entrypoint(
        entrypoint_env(
            f"sqlite+aiosqlite:///{tmp_path / 'keepalive.db'}",
            PORT=str(port),
            WEB_CONCURRENCY="1",
            KEEPALIVE_TIMEOUT_SECONDS="1",
        )
    )
    await wait_for_health(server, port)

    def idle_then_reuse() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            first = exchange(sock)
            time.sleep(3)
            try:
                second = exchange(sock)
            except ConnectionError:
                second = b""
        return first, second

    first, second = await asyncio.to_thread(idle_then_reuse)

    assert first.startswith(b"HTTP/1.1 200")
    assert second == b"", "the idle connection was still open after 3 s"


def test_entrypoint_rejects_a_malformed_keepalive(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603
        ["bash", str(ROOT / "docker" / "entrypoint.sh")],  # noqa: S607
        env=entrypoint_env(
            f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}",
            DB_WAIT_TIMEOUT="10",
            KEEPALIVE_TIMEOUT_SECONDS="forever",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "KEEPALIVE_TIMEOUT_SECONDS" in result.stderr
