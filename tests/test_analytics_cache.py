"""The analytics cache: hits and misses, TTL, invalidation by every kind of deal write, tenant
isolation, the shared Redis backend (and its failure), and versioned entries."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.core.cache import Cache, MemoryCache, RedisCache, cached
from app.core.redis import CircuitBreaker, SharedRedis
from tests.conftest import AppFactory
from tests.support import Api, User, assert_problem

SUMMARY = "/analytics/deals/summary"
FUNNEL = "/analytics/deals/funnel"
CACHE_PREFIX = "minicrm:cache"


async def new_contact(user: User) -> int:
    response = await user.post("/contacts", json={"name": "Client"})
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


async def new_deal(user: User, contact_id: int, amount: str = "10", **changes: Any) -> int:
    response = await user.post(
        "/deals", json={"contact_id": contact_id, "title": "Deal", "amount": amount}
    )
    assert response.status_code == 201, response.text
    deal_id: int = response.json()["id"]
    if changes:
        patched = await user.patch(f"/deals/{deal_id}", json=changes)
        assert patched.status_code == 200, patched.text
    return deal_id


async def read(user: User, path: str = SUMMARY, **params: Any) -> tuple[dict[str, Any], str]:
    """(body, X-Cache)."""
    response = await user.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, response.headers["x-cache"]


def on(api: Api, user: User) -> User:
    """The same user (same tokens) talking to another app instance."""
    return dataclasses.replace(user, api=api)


async def flush(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


# --- hits and misses ------------------------------------------------------------------------


async def test_second_read_is_a_hit_with_the_same_body(owner: User) -> None:
    await new_deal(owner, await new_contact(owner), "12.34", status="won")
    for path in (SUMMARY, FUNNEL):
        first, first_cache = await read(owner, path)
        second, second_cache = await read(owner, path)

        assert (first_cache, second_cache) == ("MISS", "HIT")
        assert second == first
    assert first["stages"][0]["reached"] == 1


async def test_each_parameter_set_is_its_own_entry(owner: User) -> None:
    contact = await new_contact(owner)
    await new_deal(owner, contact, "1")
    await new_deal(owner, contact, "2", currency="EUR")
    assert (await read(owner, SUMMARY))[1] == "MISS"
    assert (await read(owner, SUMMARY))[1] == "HIT"

    by_days, cache = await read(owner, SUMMARY, days=7)
    assert (cache, by_days["days"]) == ("MISS", 7)
    eur, cache = await read(owner, SUMMARY, currency="EUR")
    assert (cache, eur["total"]) == ("MISS", {"count": 1, "total_amount": 2.0})
    usd, cache = await read(owner, SUMMARY, currency="USD")
    assert (cache, usd["total"]) == ("MISS", {"count": 1, "total_amount": 1.0})
    funnel, cache = await read(owner, FUNNEL)
    assert (cache, funnel["stages"][0]["count"]) == ("MISS", 2)
    funnel_eur, cache = await read(owner, FUNNEL, currency="EUR")
    assert (cache, funnel_eur["stages"][0]["count"]) == ("MISS", 1)

    assert (await read(owner, SUMMARY, days=7))[1] == "HIT"
    assert (await read(owner, SUMMARY, currency="EUR")) == (eur, "HIT")
    assert (await read(owner, FUNNEL, currency="EUR")) == (funnel_eur, "HIT")


async def test_entries_expire_after_the_ttl(make_api: AppFactory, database_url: str) -> None:
    api = await make_api(database_url, ANALYTICS_CACHE_TTL=1)
    owner = await api.register()
    assert [(await read(owner))[1] for _ in range(2)] == ["MISS", "HIT"]

    await asyncio.sleep(1.1)

    assert (await read(owner))[1] == "MISS"
    assert (await read(owner))[1] == "HIT"


async def test_ttl_zero_disables_the_cache(make_api: AppFactory, database_url: str) -> None:
    api = await make_api(database_url, ANALYTICS_CACHE_TTL=0)
    owner = await api.register()
    contact = await new_contact(owner)
    for expected_count in (0, 1, 2):
        for path in (SUMMARY, FUNNEL):
            assert [(await read(owner, path))[1] for _ in range(2)] == ["MISS", "MISS"]
        body, _ = await read(owner)
        assert body["total"]["count"] == expected_count
        await new_deal(owner, contact)


# --- invalidation ---------------------------------------------------------------------------


async def test_every_kind_of_deal_write_invalidates(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(database_url)
    # The same data without a cache: the figures every read must show.
    uncached = await make_api(database_url, ANALYTICS_CACHE_TTL=0)
    owner = await api.register()
    contact = await new_contact(owner)
    deal = await new_deal(owner, contact, "10.00")
    spare = await new_deal(owner, contact, "5.00", status="in_progress", stage="negotiation")
    writes: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
        "create": lambda: owner.post(
            "/deals", json={"contact_id": contact, "title": "New", "amount": "7.5"}
        ),
        "status": lambda: owner.patch(f"/deals/{deal}", json={"status": "won"}),
        "amount": lambda: owner.patch(f"/deals/{deal}", json={"amount": "12.34"}),
        "stage": lambda: owner.patch(f"/deals/{deal}", json={"stage": "proposal"}),
        "currency": lambda: owner.patch(f"/deals/{deal}", json={"currency": "EUR"}),
        "delete": lambda: owner.delete(f"/deals/{spare}"),
    }
    reads = [(SUMMARY, {}), (SUMMARY, {"currency": "USD"}), (FUNNEL, {})]

    for name, write in writes.items():
        before = {}
        for path, params in reads:
            await read(owner, path, **params)
            before[path, str(params)], cache = await read(owner, path, **params)
            assert cache == "HIT", (name, path, params)

        response = await write()
        assert response.status_code in {200, 201, 204}, response.text

        changed = False
        for path, params in reads:
            after, cache = await read(owner, path, **params)
            truth, _ = await read(on(uncached, owner), path, **params)
            assert cache == "MISS", (name, path, params)
            assert after == truth, (name, path, params)
            changed = changed or after != before[path, str(params)]
        assert changed, f"{name}: the write should have changed some figure"


async def test_a_read_racing_a_write_never_caches_pre_write_figures(
    api: Api, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invalidation must follow the commit: a read that slips in right after it has to see
    the new data, or it would cache the old figures under the new generation."""
    deal = await new_deal(owner, await new_contact(owner), "10")
    await read(owner)
    cache = api.app.state.resources.cache
    invalidate = cache.invalidate
    raced: list[dict[str, Any]] = []

    async def invalidate_then_read(organization_id: int) -> None:
        await invalidate(organization_id)
        raced.append((await read(owner))[0])  # another request gets in at this very moment

    monkeypatch.setattr(cache, "invalidate", invalidate_then_read)
    patched = await owner.patch(f"/deals/{deal}", json={"status": "won"})
    assert patched.status_code == 200, patched.text
    monkeypatch.undo()

    assert len(raced) == 1
    body, _ = await read(owner)
    assert body["by_status"]["won"] == {"count": 1, "total_amount": 10.0}
    assert raced[0] == body


async def test_refused_write_changes_no_figures(api: Api, owner: User) -> None:
    contact = await new_contact(owner)
    free = await new_deal(owner, contact, "0", status="in_progress")
    manager = await api.member_of(owner, "manager")
    advanced = await new_deal(manager, contact, "3", stage="negotiation")
    before = {path: (await read(owner, path))[0] for path in (SUMMARY, FUNNEL)}

    won = await owner.patch(f"/deals/{free}", json={"status": "won", "stage": "closed"})
    assert_problem(won, 400, "DEAL_WON_REQUIRES_AMOUNT")
    rollback = await manager.patch(f"/deals/{advanced}", json={"stage": "qualification"})
    assert_problem(rollback, 403, "STAGE_ROLLBACK_FORBIDDEN")

    for path in (SUMMARY, FUNNEL):
        assert (await read(owner, path))[0] == before[path]
    fresh, cache = await read(owner, SUMMARY, days=29)  # a key never cached: computed now
    assert cache == "MISS"
    assert fresh["by_status"] == before[SUMMARY]["by_status"]
    assert fresh["by_status"]["won"]["count"] == 0


async def test_another_organizations_write_keeps_this_entry(api: Api, owner: User) -> None:
    await new_deal(owner, await new_contact(owner), "4.00")
    other = await api.register(organization_name="Other")
    other_contact = await new_contact(other)
    mine, _ = await read(owner)
    assert (await read(owner))[1] == "HIT"

    other_deal = await new_deal(other, other_contact, "9.99", status="won")
    await other.patch(f"/deals/{other_deal}", json={"amount": "19.99"})
    assert (await other.delete(f"/deals/{other_deal}")).status_code == 204
    await new_deal(other, other_contact, "1.00")

    assert await read(owner) == (mine, "HIT")
    theirs, cache = await read(other)
    assert (cache, theirs["total"]) == ("MISS", {"count": 1, "total_amount": 1.0})


# --- Redis ----------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_cache_is_shared_by_every_instance(
    make_api: AppFactory, database_url: str, redis_test_url: str
) -> None:
    await flush(redis_test_url)
    first = await make_api(database_url, REDIS_URL=redis_test_url)
    second = await make_api(database_url, REDIS_URL=redis_test_url)
    owner_a = await first.register()
    owner_b = on(second, owner_a)
    contact = await new_contact(owner_a)
    await new_deal(owner_a, contact, "10.10")

    cold, cache = await read(owner_a)
    assert cache == "MISS"
    assert await read(owner_a) == (cold, "HIT")
    assert await read(owner_b) == (cold, "HIT")  # stored by the first instance

    await new_deal(owner_b, contact, "0.20", status="won")

    fresh, cache = await read(owner_a)
    assert cache == "MISS"
    assert fresh["total"] == {"count": 2, "total_amount": 10.3}
    assert fresh["by_status"]["won"] == {"count": 1, "total_amount": 0.2}
    assert await read(owner_b) == (fresh, "HIT")

    funnel, cache = await read(owner_a, FUNNEL)
    assert cache == "MISS"
    deal = await new_deal(owner_b, contact, "1")
    patched = await owner_b.patch(f"/deals/{deal}", json={"stage": "closed"})
    assert patched.status_code == 200, patched.text
    moved, cache = await read(owner_a, FUNNEL)
    assert cache == "MISS"
    assert moved["stages"][3]["count"] == funnel["stages"][3]["count"] + 1

    # A write to another organization, through either instance, leaves this entry alone.
    stranger = on(second, await first.register(organization_name="Other"))
    await new_deal(stranger, await new_contact(stranger))
    assert await read(owner_a, FUNNEL) == (moved, "HIT")


@pytest.mark.redis
async def test_redis_entries_live_in_redis_and_expire(
    make_api: AppFactory, database_url: str, redis_test_url: str
) -> None:
    await flush(redis_test_url)
    api = await make_api(database_url, REDIS_URL=redis_test_url, ANALYTICS_CACHE_TTL=1)
    owner = await api.register()
    await new_deal(owner, await new_contact(owner), "5")
    body, _ = await read(owner)
    assert (await read(owner))[1] == "HIT"

    redis = Redis.from_url(redis_test_url, decode_responses=True)
    try:
        keys = [key async for key in redis.scan_iter(f"{CACHE_PREFIX}:*")]
        assert keys, "nothing was cached in Redis"
        assert all(key.endswith(f":{owner.organization_id}") for key in keys)
        ttls = [await redis.ttl(key) for key in keys]
        assert any(ttl > 0 for ttl in ttls), "cache entries must not live in Redis forever"
        assert max(ttls) <= 2, ttls  # ANALYTICS_CACHE_TTL=1, plus a second of slack

        await redis.flushdb()  # the entry lived only in Redis: gone now, so a miss
        assert await read(owner) == (body, "MISS")
        assert (await read(owner))[1] == "HIT"
    finally:
        await redis.aclose()

    await asyncio.sleep(1.1)
    assert await read(owner) == (body, "MISS")


async def test_unreachable_redis_degrades_to_no_cache(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(database_url, REDIS_URL="redis://127.0.0.1:1/0")
    owner = await api.register()
    contact = await new_contact(owner)
    deal = await new_deal(owner, contact, "0.10")
    await new_deal(owner, contact, "0.20")

    for _ in range(2):
        body, cache = await read(owner)
        assert cache == "MISS"
        assert body["total"] == {"count": 2, "total_amount": 0.3}
    patched = await owner.patch(f"/deals/{deal}", json={"status": "won", "stage": "closed"})
    assert patched.status_code == 200, patched.text
    body, cache = await read(owner)
    assert cache == "MISS"
    assert body["by_status"]["won"] == {"count": 1, "total_amount": 0.1}
    funnel, cache = await read(owner, FUNNEL)
    assert cache == "MISS"
    assert funnel["stages"][3]["count"] == 1
    assert (await owner.delete(f"/deals/{deal}")).status_code == 204
    assert (await read(owner))[0]["total"] == {"count": 1, "total_amount": 0.2}

    ready = await api.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}


# --- versioned entries, at unit level --------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache(ttl_seconds=60)
        return
    url: str = request.getfixturevalue("redis_test_url")
    await flush(url)
    redis = Redis.from_url(url)
    try:
        yield RedisCache(SharedRedis(redis, 1.0, CircuitBreaker(3, 5)), ttl_seconds=60)
    finally:
        await redis.aclose()


async def test_an_entry_is_served_only_at_the_version_it_was_computed_from(cache: Cache) -> None:
    await cache.set(1, "summary", 3, {"deals": 3})

    assert await cache.get(1, "summary", 3) == {"deals": 3}
    # A write committed (version 4) but its invalidation was lost: still never served.
    assert await cache.get(1, "summary", 4) is None


async def test_cached_computes_once_per_version(cache: Cache) -> None:
    calls: list[int] = []

    async def compute() -> dict[str, int]:
        calls.append(1)
        return {"total": len(calls)}

    assert await cached(cache, 7, "k", 1, compute) == ({"total": 1}, False)
    assert await cached(cache, 7, "k", 1, compute) == ({"total": 1}, True)
    assert await cached(cache, 7, "k", 2, compute) == ({"total": 2}, False)
    assert await cached(cache, 7, "k", 2, compute) == ({"total": 2}, True)


async def test_invalidation_is_per_organization(cache: Cache) -> None:
    for organization_id in (1, 2):
        await cache.set(organization_id, "k", 0, {"org": organization_id})

    await cache.invalidate(1)

    assert await cache.get(1, "k", 0) is None
    assert await cache.get(2, "k", 0) == {"org": 2}


@pytest.mark.redis
async def test_a_redis_organization_hash_is_capped(redis_test_url: str) -> None:
    await flush(redis_test_url)
    redis = Redis.from_url(redis_test_url)
    try:
        shared = SharedRedis(redis, 1.0, CircuitBreaker(3, 5))
        cache = RedisCache(shared, 60, prefix=CACHE_PREFIX, max_entries_per_organization=3)
        sizes = []
        for index in range(7):
            await cache.set(1, f"key{index}", 1, index)
            sizes.append(await redis.hlen(f"{CACHE_PREFIX}:1"))
        assert sizes == [1, 2, 3, 0, 1, 2, 3]  # over the cap: the organization starts over
        assert await cache.get(1, "key6", 1) == 6
    finally:
        await redis.aclose()
