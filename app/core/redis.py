"""The one way to Redis: the shared client behind a circuit breaker.

Redis only ever speeds things up or shares counts between processes; the database and each
process's own memory can do its job, more slowly or per process. So nothing may wait on a
Redis that is down or hung. Every caller (the analytics cache, the login throttle) goes through
`SharedRedis.run`, which answers within `REDIS_TIMEOUT_SECONDS` or raises `RedisUnavailable`,
and falls back to its own path on that exception.

After `REDIS_BREAKER_FAILURES` failures in a row the breaker opens: calls fail at once, without
touching Redis, for `REDIS_BREAKER_RESET_SECONDS`. Then one call is let through as a probe
(half-open): its success closes the breaker, its failure opens it for another period. So a hung
Redis costs the few requests that meet it at most the timeout each, and every other request
nothing.

The client itself never retries with backoff (redis-py's default retries a failing call ten
times, with sleeps of up to ten seconds between tries): one retry on a broken connection, which
is what a pooled connection left over from a Redis restart gives, and none after a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.core.config import Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class RedisUnavailable(Exception):
    """Redis did not answer in time, answered with an error, or the breaker is open."""


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go to Redis
    OPEN = "open"  # calls fail at once
    HALF_OPEN = "half_open"  # the next call (only one at a time) probes Redis


class CircuitBreaker:
    """Counts consecutive failures; open after `failure_threshold`, probing every
    `reset_seconds`. Not thread-safe: one per process, used from its event loop."""

    def __init__(
        self,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.name = name
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self.reset_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> tuple[bool, bool]:
        """(may this call go to Redis?, is it the half-open probe?)"""
        if self._opened_at is None:
            return True, False
        if self._probing or self._clock() - self._opened_at < self.reset_seconds:
            return False, False
        self._probing = True
        return True, True

    def record_success(self) -> None:
        if self._opened_at is not None:
            logger.warning("%s answers again: circuit breaker closed", self.name)
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self, reason: str) -> None:
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self.failure_threshold):
            if self._opened_at is None:
                logger.warning(
                    "%s failed %d times in a row (%s): circuit breaker open, not waiting on it "
                    "for %gs",
                    self.name,
                    self._failures,
                    reason,
                    self.reset_seconds,
                )
            self._opened_at = self._clock()
            self._probing = False

    def release_probe(self) -> None:
        """The probe ended with neither answer (it was cancelled): let the next call probe."""
        self._probing = False


class SharedRedis:
    """The Redis client shared by everything in the process, behind its circuit breaker."""

    def __init__(self, client: Redis, timeout_seconds: float, breaker: CircuitBreaker) -> None:
        self.client = client
        self.timeout = timeout_seconds
        self.breaker = breaker

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> SharedRedis:
        timeout = settings.REDIS_TIMEOUT_SECONDS
        client = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        breaker = CircuitBreaker(
            settings.REDIS_BREAKER_FAILURES, settings.REDIS_BREAKER_RESET_SECONDS
        )
        return cls(client, timeout, breaker)

    async def run(self, operation: Callable[[Redis], Awaitable[_T]]) -> _T:
        """`operation(client)`, or `RedisUnavailable` within the timeout (at once while the
        breaker is open)."""
        allowed, probe = self.breaker.allow()
        if not allowed:
            raise RedisUnavailable("circuit breaker open")
        try:
            # The socket timeouts bound each read; this bounds the whole call (a new
            # connection's handshake, a pipeline), however many reads it takes.
            async with asyncio.timeout(self.timeout):
                result = await operation(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.breaker.record_failure(reason)
            raise RedisUnavailable(reason) from exc
        except BaseException:
            if probe:
                self.breaker.release_probe()
            raise
        self.breaker.record_success()
        return result

    async def ping(self) -> bool:
        """Whether Redis answers now (through the breaker: False while it is open)."""
        try:
            await self.run(lambda client: client.ping())
        except RedisUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        await self.client.aclose()
