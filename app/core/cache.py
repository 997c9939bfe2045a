"""Storage for cached read models: per organization, each entry under a data version.

What is cached, under which version, and when it is dropped is decided in one place,
`app.services.read_models`; this module only stores. An entry is returned only for exactly the
version it was stored with, so a reader that read a newer version never gets it.
`invalidate` only frees the space of entries that can no longer be served.

Two backends: in-process (default; per worker process) and Redis (shared by all workers and
instances). A Redis failure degrades to "no cache": never returned to a client, and while
Redis hangs no request waits on it (`app.core.redis`: the breaker logs its openings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from app.core.redis import RedisUnavailable, SharedRedis

logger = logging.getLogger(__name__)

Json = Any


class Cache(Protocol):
    async def get(self, organization_id: int, key: str, version: int) -> Json | None:
        """The value stored for (organization, key) at exactly `version`, else None."""

    async def set(self, organization_id: int, key: str, version: int, value: Json) -> None: ...

    async def invalidate(self, organization_id: int) -> None:
        """Drop the organization's entries (they are stale once its version moved on)."""


def cache_key(kind: str, parts: list[Any]) -> str:
    """A short, stable cache key for a read described by JSON-able `parts` (a filter set)."""
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


async def cached(
    cache: Cache,
    organization_id: int,
    key: str,
    version: int,
    compute: Callable[[], Awaitable[Json]],
) -> tuple[Json, bool]:
    """The cached value for (organization, key, version), computing and storing it on a miss.

    Returns (value, hit)."""
    value = await cache.get(organization_id, key, version)
    if value is not None:
        return value, True
    value = await compute()
    await cache.set(organization_id, key, version, value)
    return value, False


class NullCache:
    async def get(self, organization_id: int, key: str, version: int) -> Json | None:
        return None

    async def set(self, organization_id: int, key: str, version: int, value: Json) -> None:
        return None

    async def invalidate(self, organization_id: int) -> None:
        return None


class MemoryCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, str], tuple[int, float, Json]] = OrderedDict()

    async def get(self, organization_id: int, key: str, version: int) -> Json | None:
        entry = self._entries.get((organization_id, key))
        if entry is None:
            return None
        entry_version, expires_at, value = entry
        if entry_version != version or expires_at <= time.monotonic():
            return None
        self._entries.move_to_end((organization_id, key))
        return value

    async def set(self, organization_id: int, key: str, version: int, value: Json) -> None:
        current = self._entries.get((organization_id, key))
        if current is not None and current[0] > version:
            return  # a reader that saw newer data already stored its result
        self._entries[(organization_id, key)] = (version, time.monotonic() + self.ttl, value)
        self._entries.move_to_end((organization_id, key))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def invalidate(self, organization_id: int) -> None:
        for entry_key in [k for k in self._entries if k[0] == organization_id]:
            del self._entries[entry_key]


class RedisCache:
    """One hash per organization, a field per key: `{"version", "expires_at", "value"}`.

    Through the shared client's circuit breaker: while Redis fails or hangs, every read is a
    miss and every write a no-op, at once."""

    def __init__(
        self,
        redis: SharedRedis,
        ttl_seconds: int,
        prefix: str = "minicrm:cache",
        max_entries_per_organization: int = 10_000,
    ) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.prefix = prefix
        self.max_entries = max_entries_per_organization

    def _key(self, organization_id: int) -> str:
        return f"{self.prefix}:{organization_id}"

    async def get(self, organization_id: int, key: str, version: int) -> Json | None:
        try:
            raw = await self.redis.run(lambda client: client.hget(self._key(organization_id), key))
        except RedisUnavailable as exc:
            logger.debug("cache read failed, computing uncached: %s", exc)
            return None
        if raw is None:
            return None
        entry = json.loads(raw)
        if entry["version"] != version or entry["expires_at"] <= time.time():
            return None
        return entry["value"]

    async def set(self, organization_id: int, key: str, version: int, value: Json) -> None:
        entry = json.dumps(
            {"version": version, "expires_at": time.time() + self.ttl, "value": value}
        )
        hash_key = self._key(organization_id)

        async def store(client: Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(hash_key, key, entry)
                pipe.expire(hash_key, max(1, int(self.ttl) + 1))
                pipe.hlen(hash_key)
                *_, entries = await pipe.execute()
            if entries > self.max_entries:
                # Every distinct list page or search adds an entry and each write of one keeps
                # the hash alive: start the organization over rather than grow without bound.
                await client.delete(hash_key)

        try:
            await self.redis.run(store)
        except RedisUnavailable as exc:
            logger.debug("cache write failed: %s", exc)

    async def invalidate(self, organization_id: int) -> None:
        try:
            await self.redis.run(lambda client: client.delete(self._key(organization_id)))
        except RedisUnavailable as exc:
            # Harmless for correctness: the stale entries no longer match the data version.
            logger.debug("cache invalidation failed for organization %s: %s", organization_id, exc)
