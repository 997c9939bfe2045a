"""Failed-login throttling: at most N failures per key within a sliding window.

In-process by default; in Redis when `REDIS_URL` is set, so every worker and instance shares
the count. If Redis fails (or its circuit breaker is open), each process counts on its own
until Redis answers again: the throttle never switches off.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from typing import Protocol

from redis.asyncio import Redis

from app.core.redis import RedisUnavailable, SharedRedis

logger = logging.getLogger(__name__)


class LoginThrottle(Protocol):
    async def retry_after(self, key: str) -> int | None:
        """Seconds until another attempt is allowed, or None when it is allowed now."""

    async def record_failure(self, key: str) -> None: ...

    async def reset(self, key: str) -> None: ...


class MemoryLoginThrottle:
    def __init__(self, max_attempts: int, window_seconds: int, max_keys: int = 100_000) -> None:
        self.max_attempts = max_attempts
        self.window = window_seconds
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    async def retry_after(self, key: str) -> int | None:
        now = time.monotonic()
        failures = self._recent(key, now)
        if len(failures) < self.max_attempts:
            return None
        return max(1, math.ceil(failures[-self.max_attempts] + self.window - now))

    async def record_failure(self, key: str) -> None:
        now = time.monotonic()
        failures = self._recent(key, now)
        if key not in self._failures:
            failures = self._failures[key] = deque(maxlen=self.max_attempts)
            if len(self._failures) > self.max_keys:  # bound memory under an email spray
                self._failures.popitem(last=False)
        failures.append(now)

    async def reset(self, key: str) -> None:
        self._failures.pop(key, None)


class RedisLoginThrottle:
    """Counts shared by every worker and instance, in Redis, over a count of this process's own.

    Every failure is also counted in this process (`MemoryLoginThrottle`), and the stricter of
    the two counts decides. When Redis fails or its breaker is open, the local count alone
    decides: per process, as without Redis, never "no limit". The local count was kept all
    along, so an outage does not hand an attacker a fresh allowance in this process."""

    def __init__(self, redis: SharedRedis, max_attempts: int, window_seconds: int) -> None:
        self.redis = redis
        self.max_attempts = max_attempts
        self.window = window_seconds
        self.local = MemoryLoginThrottle(max_attempts, window_seconds)

    @staticmethod
    def _key(key: str) -> str:
        return f"minicrm:login-failures:{key}"

    async def retry_after(self, key: str) -> int | None:
        local = await self.local.retry_after(key)
        now = time.time()

        async def read(client: Redis) -> list[tuple[bytes, float]]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self._key(key), 0, now - self.window)
                pipe.zrange(self._key(key), -self.max_attempts, -1, withscores=True)
                _, recent = await pipe.execute()
            return recent  # type: ignore[no-any-return]

        try:
            recent = await self.redis.run(read)
        except RedisUnavailable as exc:
            logger.debug("login throttle: Redis unavailable (%s), counting per process", exc)
            return local
        if len(recent) < self.max_attempts:
            return local
        oldest = float(recent[0][1])
        shared = max(1, math.ceil(oldest + self.window - now))
        return max(shared, local or 0)

    async def record_failure(self, key: str) -> None:
        await self.local.record_failure(key)
        now = time.time()

        async def record(client: Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zadd(self._key(key), {uuid.uuid4().hex: now})
                pipe.zremrangebyscore(self._key(key), 0, now - self.window)
                pipe.expire(self._key(key), self.window)
                await pipe.execute()

        try:
            await self.redis.run(record)
        except RedisUnavailable as exc:
            logger.debug("login throttle: failure counted in this process only (%s)", exc)

    async def reset(self, key: str) -> None:
        await self.local.reset(key)
        try:
            await self.redis.run(lambda client: client.delete(self._key(key)))
        except RedisUnavailable as exc:
            logger.debug("login throttle: shared count not reset (%s)", exc)
