"""A small per-organization cache for computed read models (analytics).

Entries are tagged with the organization's *generation*; a write to the organization's data
bumps the generation (after the transaction commits), which makes every older entry a miss.
Because a reader tags what it stores with the generation it saw *before* computing, a value
computed from pre-write data can never be served after the write's invalidation.

Two backends: in-process (default; per worker process) and Redis (shared by all workers and
instances). A Redis failure degrades to "no cache": it is logged, never returned to a client.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Json = Any


class Cache(Protocol):
    async def lookup(self, organization_id: int, key: str) -> tuple[Json | None, int | None]:
        """Return (value or None, generation token to store with; None = do not store)."""

    async def store(self, organization_id: int, key: str, value: Json, generation: int) -> None: ...

    async def invalidate(self, organization_id: int) -> None: ...


async def cached(
    cache: Cache, organization_id: int, key: str, compute: Callable[[], Awaitable[Json]]
) -> tuple[Json, bool]:
    """The cached value for (organization, key), computing and storing it on a miss.

    Returns (value, hit)."""
    value, generation = await cache.lookup(organization_id, key)
    if value is not None:
        return value, True
    value = await compute()
    if generation is not None:
        await cache.store(organization_id, key, value, generation)
    return value, False


class NullCache:
    async def lookup(self, organization_id: int, key: str) -> tuple[Json | None, int | None]:
        return None, None

    async def store(self, organization_id: int, key: str, value: Json, generation: int) -> None:
        return None

    async def invalidate(self, organization_id: int) -> None:
        return None


class MemoryCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._generations: dict[int, int] = {}
        self._entries: OrderedDict[tuple[int, str], tuple[int, float, Json]] = OrderedDict()

    async def lookup(self, organization_id: int, key: str) -> tuple[Json | None, int | None]:
        generation = self._generations.get(organization_id, 0)
        entry = self._entries.get((organization_id, key))
        if entry is not None:
            entry_generation, expires_at, value = entry
            if entry_generation == generation and expires_at > time.monotonic():
                self._entries.move_to_end((organization_id, key))
                return value, generation
            del self._entries[(organization_id, key)]
        return None, generation

    async def store(self, organization_id: int, key: str, value: Json, generation: int) -> None:
        if generation != self._generations.get(organization_id, 0):
            return  # a write landed while this value was computed
        self._entries[(organization_id, key)] = (generation, time.monotonic() + self.ttl, value)
        self._entries.move_to_end((organization_id, key))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def invalidate(self, organization_id: int) -> None:
        self._generations[organization_id] = self._generations.get(organization_id, 0) + 1


class RedisCache:
    """Entries live in one hash per organization; the generation in a counter beside it."""

    def __init__(self, redis: Redis, ttl_seconds: int, prefix: str = "minicrm:cache") -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.prefix = prefix

    def _keys(self, organization_id: int) -> tuple[str, str]:
        base = f"{self.prefix}:{organization_id}"
        return f"{base}:generation", f"{base}:entries"

    async def lookup(self, organization_id: int, key: str) -> tuple[Json | None, int | None]:
        generation_key, entries_key = self._keys(organization_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(generation_key)
                pipe.hget(entries_key, key)
                raw_generation, raw_entry = await pipe.execute()
        except RedisError as exc:
            logger.warning("cache lookup failed, computing uncached: %s", exc)
            return None, None
        generation = int(raw_generation or 0)
        if raw_entry is not None:
            entry = json.loads(raw_entry)
            if entry["generation"] == generation and entry["expires_at"] > time.time():
                return entry["value"], generation
        return None, generation

    async def store(self, organization_id: int, key: str, value: Json, generation: int) -> None:
        _, entries_key = self._keys(organization_id)
        entry = json.dumps(
            {"generation": generation, "expires_at": time.time() + self.ttl, "value": value}
        )
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(entries_key, key, entry)
                pipe.expire(entries_key, max(1, int(self.ttl) + 1))
                await pipe.execute()
        except RedisError as exc:
            logger.warning("cache store failed: %s", exc)

    async def invalidate(self, organization_id: int) -> None:
        generation_key, entries_key = self._keys(organization_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(generation_key)
                pipe.delete(entries_key)
                await pipe.execute()
        except RedisError as exc:
            logger.error("cache invalidation failed for organization %s: %s", organization_id, exc)
