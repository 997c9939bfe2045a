"""Request rate limits: a sliding-window counter per key, counted in this process and shared
through Redis in batches.

Each key (a credential, an organization) is counted in fixed one-minute windows aligned on the
clock (so every process numbers them alike); a request is admitted when
`previous window * (share of it still inside the last minute) + current window + 1 <= limit`,
the "sliding window counter" estimate. Refused requests are not counted.

Why not a Redis round trip per request (as the `limits` library's Redis storage does, through
a client of its own that our breaker would not guard): on the busiest route that round trip
would cost more than the whole budget for rate limiting. So each process counts locally and
decides at once, and within `RATE_LIMIT_SYNC_SECONDS` of a request a background task adds
this process's new hits to the shared per-window counters in Redis (one pipelined round trip
for all the keys used meanwhile, through `SharedRedis` and its breaker) and reads back the
totals of every process. No request ever waits on Redis.

Accuracy: within one process the count is exact. Across processes, each decides on the shared
total as of its last sync of that key, so a key can be admitted beyond its limit by the
requests the *other* processes admitted for it since then: at most one sync interval plus a
Redis round trip of their traffic for that key (a process's first request for a key starts
from its own count, and learns the others' at that sync). Without Redis, or while Redis
fails, each process counts on its own (a limit then applies per process) and keeps its count:
it never switches off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.redis import RedisUnavailable, SharedRedis

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A process forgets keys idle for two windows; this bounds it between those sweeps too.
_MAX_KEYS = 100_000


def redis_key(key: str, window: int) -> str:
    return f"minicrm:rate:{key}:{window}"


@dataclass(slots=True)  # not frozen: built on every request, and frozen costs 5 setattr calls
class Quota:
    """One policy's answer for one request (the `RateLimit` header's item)."""

    policy: str  # "credential" or "organization"
    limit: int
    remaining: int
    reset_seconds: int  # until the current window ends, or until a retry may succeed
    retry_after: int | None  # set when the request is refused


class _KeyCount:
    """Counts of one key in its current window and the one before it.

    `own` counts this process's hits, `unsent` those not yet added in Redis, `shared` the total
    Redis last reported (every process's hits, our sent ones included)."""

    __slots__ = (
        "own",
        "previous_own",
        "previous_shared",
        "previous_unsent",
        "shared",
        "unsent",
        "window",
    )

    def __init__(self, window: int) -> None:
        self.window = window
        self.own = self.unsent = self.shared = 0
        self.previous_own = self.previous_unsent = self.previous_shared = 0

    def roll(self, window: int) -> None:
        if window == self.window + 1:
            self.previous_own, self.previous_unsent = self.own, self.unsent
            self.previous_shared = self.shared
        else:
            self.previous_own = self.previous_unsent = self.previous_shared = 0
        self.window = window
        self.own = self.unsent = self.shared = 0

    def current(self) -> int:
        return max(self.own, self.shared + self.unsent)

    def previous(self) -> int:
        return max(self.previous_own, self.previous_shared + self.previous_unsent)


def seconds_until_admitted(previous: int, current: int, limit: int, elapsed: float) -> int:
    """Whole seconds until `previous * (1 - t/W) + current + 1 <= limit` (rolling into the next
    window, where `current` becomes the decaying one, if it must)."""
    room = limit - 1 - current
    if room >= 0 and previous > 0:
        wait = WINDOW_SECONDS * (1 - room / previous) - elapsed
    elif current <= limit - 1:
        wait = 0.0
    else:
        wait = WINDOW_SECONDS - elapsed + WINDOW_SECONDS * (1 - (limit - 1) / current)
    return max(1, math.ceil(wait))


class RateLimiter:
    """Sliding-window counters for any number of keys, each hit checked against its limit."""

    def __init__(self, redis: SharedRedis | None, sync_seconds: float) -> None:
        self.redis = redis
        self.sync_seconds = sync_seconds
        self._counts: dict[str, _KeyCount] = {}
        self._swept_window = 0
        self._dirty: set[str] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self._closed = False

    def hit(self, key: str, policy: str, limit: int) -> Quota:
        """Count one request against `key` (unless it is over `limit`: then it is refused and
        not counted). Never waits: Redis is only read and written by the background sync."""
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        elapsed = now - window * WINDOW_SECONDS
        count = self._counts.get(key)
        if count is None or count.window != window:
            count = self._start_window(key, count, window)
        if self.redis is not None:
            # Refused requests too: the sync then brings back what the others counted.
            self._dirty.add(key)
            if self._sync_task is None and not self._closed:
                self._sync_task = asyncio.get_running_loop().create_task(self._sync_later())
        previous, current = count.previous(), count.current()
        estimate = previous * (1 - elapsed / WINDOW_SECONDS) + current
        if estimate + 1 > limit:
            wait = seconds_until_admitted(previous, current, limit, elapsed)
            return Quota(policy, limit, 0, wait, wait)
        count.own += 1
        count.unsent += 1
        return Quota(
            policy,
            limit,
            max(0, limit - math.ceil(estimate + 1)),
            max(1, math.ceil(WINDOW_SECONDS - elapsed)),
            None,
        )

    def _start_window(self, key: str, count: _KeyCount | None, window: int) -> _KeyCount:
        if window != self._swept_window:
            self._sweep(window)
        if count is None:
            if len(self._counts) >= _MAX_KEYS:
                self._counts.pop(next(iter(self._counts)))
            count = self._counts[key] = _KeyCount(window)
        else:
            count.roll(window)
        return count

    def _sweep(self, window: int) -> None:
        self._swept_window = window
        stale = [key for key, count in self._counts.items() if count.window < window - 1]
        for key in stale:
            del self._counts[key]

    async def _sync_later(self) -> None:
        try:
            await asyncio.sleep(self.sync_seconds)
            await self.sync()
        finally:
            self._sync_task = None
            if self._dirty and not self._closed:  # counted meanwhile, or given back
                self._sync_task = asyncio.get_running_loop().create_task(self._sync_later())

    async def sync(self) -> None:
        """Add this process's unsent hits to the shared counters; read back every process's."""
        assert self.redis is not None
        sent: list[tuple[str, int, int, int]] = []  # key, window, amount, previous amount
        for key in self._dirty:
            count = self._counts.get(key)
            if count is not None:
                sent.append((key, count.window, count.unsent, count.previous_unsent))
                count.unsent = count.previous_unsent = 0
        self._dirty.clear()
        if not sent:
            return

        async def add(client: Redis) -> list[int]:
            async with client.pipeline(transaction=False) as pipe:
                for key, window, amount, previous_amount in sent:
                    pipe.incrby(redis_key(key, window), amount)
                    pipe.expire(redis_key(key, window), 2 * WINDOW_SECONDS)
                    pipe.incrby(redis_key(key, window - 1), previous_amount)
                    pipe.expire(redis_key(key, window - 1), WINDOW_SECONDS)
                results = await pipe.execute()
            return [int(result) for result in results[0::2]]

        try:
            totals = await self.redis.run(add)
        except RedisUnavailable as exc:
            logger.debug("rate limit: hits kept in this process for now (%s)", exc)
            for key, window, amount, previous_amount in sent:
                self._give_back(key, window, amount, previous_amount)
            return
        for index, (key, window, _, _) in enumerate(sent):
            count = self._counts.get(key)
            if count is None:
                continue
            total, previous_total = totals[2 * index], totals[2 * index + 1]
            if count.window == window:
                count.shared = max(count.shared, total)
                count.previous_shared = max(count.previous_shared, previous_total)
            elif count.window == window + 1:
                count.previous_shared = max(count.previous_shared, total)

    def _give_back(self, key: str, window: int, amount: int, previous_amount: int) -> None:
        count = self._counts.get(key)
        if count is None:
            return
        if count.window == window:
            count.unsent += amount
            count.previous_unsent += previous_amount
        elif count.window == window + 1:
            count.previous_unsent += amount
        else:
            return
        self._dirty.add(key)

    async def aclose(self) -> None:
        """Send what is still unsent (once, bounded by the Redis timeout) and stop."""
        self._closed = True
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.redis is not None and self._dirty:
            await self.sync()
