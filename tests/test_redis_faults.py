"""Redis failing: down, refusing commands, or hung. The service keeps answering, correctly.

The login throttle falls back to counting per process (never off); the analytics cache to
computing from the database; a circuit breaker stops every request from waiting on a hung
Redis, `/health/ready` reports it, and Redis is used again once it answers. The failing Redis
servers are this test's own `redis-server` processes (never the shared one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.redis import BreakerState, CircuitBreaker
from tests.conftest import AppFactory, skip_or_fail
from tests.support import Api, User, assert_problem, create_contact, create_deal

SUMMARY = "/analytics/deals/summary"
WRONG = "WrongPassword1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hang(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Any]:
    """Start a private `redis-server` (extra arguments: its configuration), ready to answer."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    assert binary is not None
    started: list[RedisServer] = []

    def start(*config: str) -> RedisServer:
        port = free_port()
        process = subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
                *config,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(process, port)
        started.append(server)
        deadline = time.monotonic() + 10
        while True:
            try:
                with SyncRedis(port=port, socket_timeout=1) as client:
                    client.ping()
                return server
            except RedisError as exc:
                if "NOAUTH" in str(exc) or "Authentication" in type(exc).__name__:
                    return server  # up, and refusing as configured
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"redis-server on port {port} did not start: {exc}")
                time.sleep(0.05)

    yield start
    for server in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)
            server.process.kill()
        server.process.wait(timeout=10)


async def login(api: Api, email: str, password: str) -> httpx.Response:
    return await api.client.post(
        api.url("/auth/login"), json={"email": email, "password": password}
    )


async def summary(user: User) -> tuple[dict[str, Any], str]:
    response = await user.get(SUMMARY)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, response.headers["x-cache"]


async def assert_throttled_after(api: Api, email: str, limit: int) -> None:
    for _ in range(limit):
        assert_problem(await login(api, email, WRONG), 401, "INVALID_CREDENTIALS")
    throttled = await login(api, email, WRONG)
    assert_problem(throttled, 429, "LOGIN_THROTTLED")
    assert int(throttled.headers["retry-after"]) > 0
    # The right password too: the throttle is per email, whatever the password.
    assert_problem(await login(api, email, "StrongPassword123"), 429, "LOGIN_THROTTLED")


# --- the login throttle never fails open ------------------------------------------------------


async def test_login_throttle_counts_per_process_when_nothing_listens_on_the_redis_port(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(
        database_url,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        LOGIN_THROTTLE_MAX_ATTEMPTS=4,
    )
    owner = await api.register()

    await assert_throttled_after(api, owner.email, limit=4)

    ready = await api.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(("--maxmemory", "1", "--maxmemory-policy", "noeviction"), id="out-of-memory"),
        pytest.param(("--requirepass", "not-the-apps-password"), id="refuses-every-command"),
    ],
)
async def test_login_throttle_counts_per_process_when_redis_answers_with_errors(
    make_api: AppFactory, database_url: str, start_redis: Any, config: tuple[str, ...]
) -> None:
    """Out of memory, Redis still answers reads but refuses to record a failure; without the
    password it refuses everything. Either way the limit holds."""
    redis = start_redis(*config)
    api = await make_api(database_url, REDIS_URL=redis.url, LOGIN_THROTTLE_MAX_ATTEMPTS=4)
    owner = await api.register()

    await assert_throttled_after(api, owner.email, limit=4)
    # Another email has its own count, and logging in works.
    other = await api.register()
    response = await login(api, other.email, "StrongPassword123")
    assert response.status_code == 200, response.text


# --- a hung Redis: the circuit breaker --------------------------------------------------------


async def test_a_hung_redis_opens_the_breaker_and_no_request_waits_for_it(
    make_api: AppFactory, database_url: str, start_redis: Any
) -> None:
    # A timeout long enough to see: once the breaker is open, no request may take anywhere
    # near it. (The default timeout is milliseconds.)
    timeout = 2.0
    redis = start_redis()
    api = await make_api(
        database_url,
        REDIS_URL=redis.url,
        REDIS_TIMEOUT_SECONDS=timeout,
        REDIS_BREAKER_FAILURES=3,
        REDIS_BREAKER_RESET_SECONDS=4,
        LOGIN_THROTTLE_MAX_ATTEMPTS=3,
    )
    owner = await api.register()
    other = await api.register()
    contact = await create_contact(owner)
    await create_deal(owner, contact, amount="10")
    await create_deal(owner, contact, amount="5")
    expected, _ = await summary(owner)
    assert expected["total"] == {"count": 2, "total_amount": 15}
    assert await summary(owner) == (expected, "HIT")  # Redis serves the cache
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["breakers"] == {"redis": "closed"}

    redis.hang()
    # The first requests meet the hung Redis and give up on it after the timeout; together
    # they make the failures that open the breaker. Their answers are still right.
    first = await asyncio.gather(*(summary(owner) for _ in range(3)))
    assert first == [(expected, "MISS")] * 3
    breaker = api.app.state.resources.redis.breaker
    assert breaker.state is BreakerState.OPEN

    # From now on nothing waits on Redis: analytics from the database, the login throttle
    # counting in this process, each answer far quicker than one Redis timeout.
    async def timed(call: Any) -> Any:
        started = time.monotonic()
        result = await call
        elapsed = time.monotonic() - started
        assert elapsed < timeout / 2, f"a request waited {elapsed:.2f}s: it waited on Redis"
        return result

    for _ in range(3):
        assert await timed(summary(owner)) == (expected, "MISS")
    for _ in range(3):
        assert_problem(await timed(login(api, owner.email, WRONG)), 401, "INVALID_CREDENTIALS")
    assert_problem(await timed(login(api, owner.email, WRONG)), 429, "LOGIN_THROTTLED")
    assert (await timed(login(api, other.email, "StrongPassword123"))).status_code == 200
    ready = await timed(api.client.get("/health/ready"))
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unavailable"},
        "breakers": {"redis": "open"},
    }

    redis.resume()
    # After the reset period one call probes Redis, finds it answering, and closes the breaker.
    deadline = time.monotonic() + 30
    while (ready := await api.client.get("/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        await asyncio.sleep(0.2)
    assert ready.json()["breakers"] == {"redis": "closed"}
    assert breaker.state is BreakerState.CLOSED
    await summary(owner)  # stored again if it was lost
    assert await summary(owner) == (expected, "HIT")  # the cache in Redis is used again


async def test_with_the_default_timeout_a_hung_redis_changes_no_answer(
    make_api: AppFactory, database_url: str, start_redis: Any
) -> None:
    redis = start_redis()
    default_timeout = Settings.model_fields["REDIS_TIMEOUT_SECONDS"].default
    api = await make_api(database_url, REDIS_URL=redis.url, REDIS_TIMEOUT_SECONDS=default_timeout)
    owner = await api.register()
    await create_deal(owner, await create_contact(owner), amount="7")
    expected, _ = await summary(owner)

    redis.hang()
    for _ in range(5):
        body, cache = await summary(owner)
        assert (body, cache) == (expected, "MISS")
    assert (await login(api, owner.email, "StrongPassword123")).status_code == 200

    assert api.app.state.resources.redis.breaker.state is BreakerState.OPEN
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["breakers"] == {"redis": "open"}


# --- the breaker's rules, on a clock of our own -----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=5, clock=Clock())
    for _ in range(2):
        breaker.record_failure("timeout")
    breaker.record_success()  # a success in between starts the count over
    for _ in range(2):
        breaker.record_failure("timeout")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() == (True, False)

    breaker.record_failure("timeout")

    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() == (False, False)


def test_breaker_lets_one_probe_through_after_the_reset_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=5, clock=clock)
    breaker.record_failure("timeout")
    clock.now = 4.9
    assert breaker.allow() == (False, False)

    clock.now = 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() == (True, True)  # the probe
    assert breaker.allow() == (False, False)  # nobody else while it runs

    breaker.record_failure("timeout")  # the probe failed: open for another period
    assert breaker.state is BreakerState.OPEN
    clock.now = 9.9
    assert breaker.allow() == (False, False)
    clock.now = 10.0
    assert breaker.allow() == (True, True)
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() == (True, False)


def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=5, clock=clock)
    breaker.record_failure("timeout")
    clock.now = 5.0
    assert breaker.allow() == (True, True)

    breaker.release_probe()

    assert breaker.allow() == (True, True)
