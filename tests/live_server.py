"""A real `uvicorn` process of the app on a free port, for tests that need a network server
(a shell walk-through with curl, the `app.main:app` import string). Synchronous, so a test can
run blocking subprocesses against it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET_KEY = "live-server-secret-key-that-is-long-enough-0123456789"
STARTUP_DEADLINE = 60.0
# Settings a developer's shell or .env may hold that must not leak into the server.
_SCRUBBED = ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY")


def free_port() -> int:
    """A local TCP port where nothing listens (until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=database_url,
        REDIS_URL="",
        ENVIRONMENT="test",
        SECRET_KEY=SECRET_KEY,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'live.db'}"


def migrate(env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_until_healthy(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"uvicorn exited ({server.process.returncode}):\n{server.output()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"GET /health did not answer within {STARTUP_DEADLINE}s")


@contextlib.contextmanager
def uvicorn_server(
    target: str, env: dict[str, str], cwd: Path, *extra_args: str
) -> Iterator[LiveServer]:
    """`uvicorn <target> --port <free port>` run from `cwd` (the app found on PYTHONPATH),
    healthy on entry, its whole process group killed on exit."""
    port = free_port()
    log = cwd / f"uvicorn-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the project's own server
            [
                str(VENV_BIN / "uvicorn"),
                target,
                *("--host", "127.0.0.1", "--port", str(port)),
                *extra_args,
            ],
            env={**env, "PYTHONPATH": str(ROOT)},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer(process, port, log)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
