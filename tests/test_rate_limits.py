"""Rate limits: every authenticated request counts against its credential and its organization.

Headers (`RateLimit-Policy`, `RateLimit`) on every counted response, 429 `RATE_LIMITED` with
`Retry-After` over a limit, counts shared by app instances through Redis, per-process counting
when Redis is down or hung (never off), and `0` turning a limit off. The failing Redis servers
are this test's own `redis-server` processes (never the shared one).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from app.core.rate_limit import WINDOW_SECONDS, redis_key, seconds_until_admitted
from tests.conftest import AppFactory
from tests.support import Api, User, assert_problem
from tests.test_redis_faults import free_port
from tests.test_redis_faults import start_redis as start_redis  # the fixture

_ITEM = re.compile(r'^"(?P<policy>[a-z]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def quotas(response: httpx.Response) -> dict[str, tuple[int, int]]:
    """`RateLimit` as {policy: (remaining, reset seconds)}."""
    result: dict[str, tuple[int, int]] = {}
    for item in response.headers["ratelimit"].split(", "):
        match = _ITEM.match(item)
        assert match is not None, item
        result[match["policy"]] = (int(match["r"]), int(match["t"]))
    return result


def assert_rate_limited(response: httpx.Response, policy: str) -> int:
    assert_problem(response, 429, "RATE_LIMITED")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 2 * WINDOW_SECONDS
    remaining, reset = quotas(response)[policy]
    assert remaining == 0
    assert reset == retry_after
    return retry_after


async def limited_api(make_api: AppFactory, database_url: str, **overrides: Any) -> Api:
    return await make_api(database_url, **overrides)


async def forget_shared_counts(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter("minicrm:rate:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_every_authenticated_response_carries_the_policy_and_a_decreasing_remainder(
    make_api: AppFactory, database_url: str
) -> None:
    api = await limited_api(
        make_api, database_url, RATE_LIMIT_PER_MINUTE=50, RATE_LIMIT_ORGANIZATION_PER_MINUTE=900
    )
    owner = await api.register()
    remaining = []
    for _ in range(3):
        response = await owner.get("/contacts")
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-policy"] == (
            '"credential";q=50;w=60, "organization";q=900;w=60'
        )
        limits = quotas(response)
        assert 1 <= limits["credential"][1] <= WINDOW_SECONDS
        remaining.append((limits["credential"][0], limits["organization"][0]))
    assert remaining[0] == (49, 899)
    assert remaining[0] > remaining[1] > remaining[2]

    # Errors count and carry the fields too; a request without an organization counts
    # against the credential only.
    missing = await owner.get("/contacts/999999")
    assert_problem(missing, 404)
    assert set(quotas(missing)) == {"credential", "organization"}
    me = await owner.get("/auth/me")
    assert me.status_code == 200
    assert me.headers["ratelimit-policy"] == '"credential";q=50;w=60'
    assert quotas(me)["credential"][0] == remaining[2][0] - 2

    # Unauthenticated requests are not counted and carry none.
    anonymous = await api.client.get(api.url("/contacts"))
    assert_problem(anonymous, 401)
    assert "ratelimit" not in anonymous.headers
    assert "ratelimit-policy" not in anonymous.headers


async def test_a_credential_over_its_limit_gets_429_with_retry_after(
    make_api: AppFactory, database_url: str
) -> None:
    api = await limited_api(make_api, database_url, RATE_LIMIT_PER_MINUTE=3)
    owner = await api.register()
    other = await api.register()
    for expected in (2, 1, 0):
        response = await owner.get("/auth/me")
        assert response.status_code == 200, response.text
        assert quotas(response)["credential"][0] == expected
    assert_rate_limited(await owner.get("/auth/me"), "credential")
    # Every route: a refused request does not reach the endpoint.
    assert_rate_limited(await owner.post("/contacts", json={"name": "Ann"}), "credential")
    # The limit is the caller's: someone else is not affected.
    assert (await other.get("/auth/me")).status_code == 200


async def test_members_of_one_organization_share_its_limit(
    make_api: AppFactory, database_url: str
) -> None:
    api = await limited_api(
        make_api, database_url, RATE_LIMIT_PER_MINUTE=100, RATE_LIMIT_ORGANIZATION_PER_MINUTE=6
    )
    owner = await api.register()
    member = await api.member_of(owner, "member")  # one request against the organization
    admitted = 0
    refused: httpx.Response | None = None
    for user in [owner, member] * 5:
        response = await user.get("/contacts")
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 200, response.text
        admitted += 1
    assert admitted == 5
    assert refused is not None
    assert_rate_limited(refused, "organization")
    assert quotas(refused)["credential"][0] > 0
    assert_rate_limited(await owner.get("/contacts"), "organization")
    # The member's own organization has its own allowance.
    organizations = (await member.get("/organizations/me")).json()
    (own_id,) = [o["id"] for o in organizations if o["id"] != owner.organization_id]
    own = await member.get("/contacts", headers={"X-Organization-Id": str(own_id)})
    assert own.status_code == 200, own.text


async def test_instances_share_the_count_through_redis(
    make_api: AppFactory, database_url: str, redis_test_url: str
) -> None:
    await forget_shared_counts(redis_test_url)
    settings = {"REDIS_URL": redis_test_url, "RATE_LIMIT_PER_MINUTE": 4}
    first = await limited_api(make_api, database_url, **settings)
    second = await limited_api(make_api, database_url, **settings)
    owner = await first.register()
    on_second = User(**{**owner.__dict__, "api": second})
    window = int(time.time() // WINDOW_SECONDS)
    for _ in range(4):
        assert (await owner.get("/auth/me")).status_code == 200
    assert_rate_limited(await owner.get("/auth/me"), "credential")

    # The first instance adds its hits to the shared count within its sync interval.
    redis = Redis.from_url(redis_test_url)
    try:
        # (in this minute's window, or partly in the next one's if a minute began meanwhile)
        keys = [redis_key(f"user:{owner.id}", w) for w in (window, window + 1)]
        deadline = time.monotonic() + 10
        while sum(int(count or 0) for count in await redis.mget(keys)) < 4:
            assert time.monotonic() < deadline, "the count never reached Redis"
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()

    # The second instance decides at once on what it knows (its first request for this
    # credential starts from its own count), and learns the shared count at its next sync:
    # not four more requests, at most the one or two of that lag.
    admitted = 0
    deadline = time.monotonic() + 10
    while (response := await on_second.get("/auth/me")).status_code == 200:
        admitted += 1
        assert time.monotonic() < deadline, "the second instance never saw the shared count"
        await asyncio.sleep(0.2)
    assert admitted <= 2
    assert_rate_limited(response, "credential")


async def test_limits_count_per_process_when_nothing_listens_on_the_redis_port(
    make_api: AppFactory, database_url: str
) -> None:
    api = await limited_api(
        make_api,
        database_url,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        REDIS_TIMEOUT_SECONDS=0.2,
        RATE_LIMIT_PER_MINUTE=3,
    )
    owner = await api.register()
    for _ in range(3):
        response = await owner.get("/auth/me")
        assert response.status_code == 200, response.text
    assert_rate_limited(await owner.get("/auth/me"), "credential")


async def test_a_hung_redis_neither_holds_requests_nor_lifts_the_limits(
    make_api: AppFactory, database_url: str, start_redis: Any
) -> None:
    timeout = 2.0  # long enough to see: no request may wait anywhere near it
    redis = start_redis()
    api = await limited_api(
        make_api,
        database_url,
        REDIS_URL=redis.url,
        REDIS_TIMEOUT_SECONDS=timeout,
        REDIS_BREAKER_FAILURES=1,
        REDIS_BREAKER_RESET_SECONDS=30,
        RATE_LIMIT_PER_MINUTE=5,
        RATE_LIMIT_SYNC_SECONDS=0.01,
    )
    owner = await api.register()
    assert (await owner.get("/auth/me")).status_code == 200
    await asyncio.sleep(0.2)  # synced while Redis answered
    redis.hang()
    # The background sync meets the hung Redis (and opens the breaker); no request waits.
    for _ in range(4):
        started = time.monotonic()
        response = await owner.get("/auth/me")
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert elapsed < timeout / 2, f"a request waited {elapsed:.2f}s: it waited on Redis"
        await asyncio.sleep(0.02)
    started = time.monotonic()
    assert_rate_limited(await owner.get("/auth/me"), "credential")
    assert time.monotonic() - started < timeout / 2
    # Nor does a new credential's first request.
    other = await api.register()
    started = time.monotonic()
    assert (await other.get("/auth/me")).status_code == 200
    assert time.monotonic() - started < timeout / 2


async def test_zero_turns_a_limit_off(make_api: AppFactory, database_url: str) -> None:
    api = await limited_api(
        make_api, database_url, RATE_LIMIT_PER_MINUTE=0, RATE_LIMIT_ORGANIZATION_PER_MINUTE=0
    )
    owner = await api.register()
    for _ in range(20):
        response = await owner.get("/contacts")
        assert response.status_code == 200, response.text
        assert "ratelimit" not in response.headers
        assert "ratelimit-policy" not in response.headers

    only_organization = await limited_api(
        make_api, database_url, RATE_LIMIT_PER_MINUTE=0, RATE_LIMIT_ORGANIZATION_PER_MINUTE=2
    )
    user = await only_organization.register()
    response = await user.get("/contacts")
    assert response.headers["ratelimit-policy"] == '"organization";q=2;w=60'
    assert (await user.get("/auth/me")).status_code == 200  # not counted: no organization
    assert (await user.get("/contacts")).status_code == 200
    assert_rate_limited(await user.get("/contacts"), "organization")


def test_retry_after_is_when_the_sliding_estimate_admits_one_more() -> None:
    # Current window full (limit 10): the previous one is empty, so only the next window
    # admits, once enough of this one has slid out: 10 * (1 - t/60) + 1 <= 10 at t = 6 s.
    assert seconds_until_admitted(0, 10, 10, elapsed=30) == 30 + 6
    # Room in this window, but the previous one still weighs: 20 * (1 - x) <= 10 - 1 - 4.
    assert seconds_until_admitted(20, 4, 10, elapsed=15) == 60 * (1 - 5 / 20) - 15
    assert seconds_until_admitted(0, 3, 10, elapsed=59.5) == 1


async def test_the_openapi_document_names_429_on_every_authenticated_operation(api: Api) -> None:
    document = (await api.client.get(api.url("/openapi.json"))).json()
    secured = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                secured += 1
                response = operation["responses"].get("429")
                assert response is not None, f"{method} {path}"
                assert "Retry-After" in response["headers"]
    assert secured > 20
