"""Lists at scale. `GET /deals`: the `total` is counted once per filter set and data version,
pages start from a remembered position instead of an OFFSET scan, and neither is ever stale.
`GET /contacts`: the same for its `total`, under the contacts' own data version.

- a repeated list (or the next page of it) does not count again;
- after every kind of deal write — create, delete, and an update of each filterable field,
  including fields that move no analytics total (title, owner, contact) — the next list
  counts afresh and its total is exact, even in another worker whose cache was never told;
- with Redis, a write through one app instance is seen by a list through another;
- another organization's writes do not touch this organization's totals;
- pages read from a remembered start are exactly the pages OFFSET gives, for every order and
  direction, with ties, in any visiting order, before and after writes; revisiting a page or
  going to the next one uses no OFFSET.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text

from tests.conftest import AppFactory
from tests.support import (
    Api,
    SentStatement,
    User,
    create_contact,
    create_deal,
    engine_of,
    patch_deal,
    statements_sent,
)


def counting_queries(api: Api, table: str = "deals") -> AbstractContextManager[list[SentStatement]]:
    """The `count(*)` statements on `table` the app sends to the database meanwhile."""
    return statements_sent(engine_of(api), lambda sql: "count(*)" in sql and f"FROM {table}" in sql)


def offset_queries(api: Api) -> AbstractContextManager[list[SentStatement]]:
    """Pages found by OFFSET (the ids-first deferred join of `TenantRepository.page`)."""
    return statements_sent(
        engine_of(api), lambda sql: "JOIN (SELECT deals.id" in " ".join(sql.split())
    )


async def list_total(user: User, path: str, **params: Any) -> int:
    """`total` of a list, checked against the items actually there."""
    response = await user.get(path, params={"page_size": 1, **params})
    assert response.status_code == 200, response.text
    everything = await user.get(path, params={**params, "page_size": 100})
    value: int = response.json()["total"]
    assert len(everything.json()["items"]) == value
    return value


async def total(user: User, **params: Any) -> int:
    return await list_total(user, "/deals", **params)


async def test_a_repeated_list_and_its_next_pages_count_once(api: Api) -> None:
    owner = await api.register()
    contact = await create_contact(owner)
    for index in range(3):
        await create_deal(owner, contact, f"Deal {index}")
    with counting_queries(api) as counts:
        for page in (1, 2, 3, 1):
            response = await owner.get("/deals", params={"page": page, "page_size": 1})
            assert response.json()["total"] == 3
        assert len(counts) == 1
        other_order = await owner.get("/deals", params={"order_by": "amount", "page_size": 1})
        assert other_order.json()["total"] == 3
        assert len(counts) == 1  # the order does not change the set, nor its count
        filtered = await owner.get("/deals", params={"status": "new", "page_size": 1})
        assert filtered.json()["total"] == 3
        assert len(counts) == 2  # another filter set is its own count


async def test_every_kind_of_deal_write_makes_the_next_total_exact(
    make_api: AppFactory, database_url: str
) -> None:
    """Reads through one app instance, writes through another, each with its own in-process
    cache (two workers): the reader's entries are never invalidated, so only the data version
    keeps them from being served."""
    reader = await make_api(database_url)
    writer_api = await make_api(database_url)
    owner = await reader.register()
    manager = await reader.member_of(owner, "manager")
    writer = dataclasses.replace(owner, api=writer_api)
    first, second = await create_contact(owner), await create_contact(owner, "Second")
    deal = (await create_deal(owner, first, "Alpha", amount="100"))["id"]
    await create_deal(owner, first, "Beta", amount="5")

    filters: list[dict[str, Any]] = [
        {"search": "alpha"},
        {"search": "gamma"},
        {"owner_id": manager.id},
        {"contact_id": second},
        {"min_amount": "50"},
        {"status": "won"},
        {"stage": "proposal"},
        {},
    ]
    before = [await total(owner, **f) for f in filters]
    assert before == [1, 0, 0, 0, 1, 0, 0, 2]
    with counting_queries(reader) as counts:
        assert [await total(owner, **f) for f in filters] == before
        assert counts == []  # all cached in the reader

    # each write moves the deal into or out of a primed filter set
    await patch_deal(writer, deal, title="Gamma")  # moves no analytics total
    assert await total(owner, search="alpha") == 0
    assert await total(owner, search="gamma") == 1
    await patch_deal(writer, deal, owner_id=manager.id)
    assert await total(owner, owner_id=manager.id) == 1
    await patch_deal(writer, deal, contact_id=second)
    assert await total(owner, contact_id=second) == 1
    await patch_deal(writer, deal, amount="10")
    assert await total(owner, min_amount="50") == 0
    await patch_deal(writer, deal, status="won")
    assert await total(owner, status="won") == 1
    await patch_deal(writer, deal, stage="proposal")
    assert await total(owner, stage="proposal") == 1
    await create_deal(writer, first, "Delta")
    assert await total(owner) == 3
    deleted = await writer.delete(f"/deals/{deal}")
    assert deleted.status_code == 204
    assert await total(owner) == 2
    assert await total(owner, status="won") == 0


async def test_another_organizations_writes_leave_the_count_cached(api: Api) -> None:
    owner = await api.register()
    await create_deal(owner, await create_contact(owner))
    assert await total(owner) == 1
    stranger = await api.register(organization_name="Other")
    await create_deal(stranger, await create_contact(stranger))
    with counting_queries(api) as counts:
        assert await total(owner) == 1
        assert counts == []


async def test_with_redis_a_write_through_one_instance_is_seen_through_another(
    make_api: AppFactory, database_url: str, redis_test_url: str
) -> None:
    redis = Redis.from_url(redis_test_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
    first = await make_api(database_url, REDIS_URL=redis_test_url)
    second = await make_api(database_url, REDIS_URL=redis_test_url)
    owner = await first.register()
    same_owner = dataclasses.replace(owner, api=second)
    contact = await create_contact(owner)
    deal = (await create_deal(owner, contact, "Alpha"))["id"]

    assert await total(owner, search="omega") == 0
    with counting_queries(second) as counts:
        assert await total(same_owner, search="omega") == 0
        assert counts == []  # counted by the first instance, served from Redis
    await patch_deal(same_owner, deal, title="Omega")
    assert await total(owner, search="omega") == 1


# --- page starts ---------------------------------------------------------------------------


def listing(user: User, **params: Any) -> Any:
    return user.get("/deals", params=params)


async def ids_of(user: User, **params: Any) -> list[int]:
    response = await listing(user, **params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_pages_from_a_remembered_start_equal_offset_pages(
    make_api: AppFactory, database_url: str
) -> None:
    cached_api = await make_api(database_url)
    plain_api = await make_api(database_url, ANALYTICS_CACHE_TTL=0)
    owner = await cached_api.register()
    plain = dataclasses.replace(owner, api=plain_api)
    contact = await create_contact(owner)
    # ties on every ordering column: 3 amounts, 4 titles, same-second timestamps
    for index in range(23):
        await create_deal(
            owner, contact, f"Deal {index % 4}", amount=str(10 * (index % 3)), currency="EUR"
        )

    # equal timestamps too (set before anything is listed, so no cache entry exists yet)
    async with engine_of(cached_api).begin() as connection:
        await connection.execute(
            text(
                "UPDATE deals SET created_at = (SELECT min(created_at) FROM deals), "
                "updated_at = (SELECT min(created_at) FROM deals) WHERE id % 2 = 0"
            )
        )

    orders = [
        {"order_by": order_by, "order": order}
        for order_by in ("created_at", "updated_at", "amount", "title")
        for order in ("asc", "desc")
    ]
    visits = [1, 2, 3, 4, 5, 6, 7, 3, 3, 6, 2, 7, 1]
    for order in orders:
        for page in visits:
            params = {**order, "page": page, "page_size": 4}
            assert await ids_of(owner, **params) == await ids_of(plain, **params), params
    # other page sizes and a filter that narrows the set: their own page starts
    for extra in ({"page_size": 3}, {"page_size": 5, "min_amount": "10"}):
        for page in (2, 3, 4, 3, 5, 1, 2):
            params = {"order_by": "amount", "order": "asc", "page": page, **extra}
            assert await ids_of(owner, **params) == await ids_of(plain, **params), params

    order = {"order_by": "amount", "order": "desc", "status": "new", "page_size": 4}
    for page in (1, 2, 3):
        await ids_of(owner, **order, page=page)
    with offset_queries(cached_api) as offsets:
        for page in (1, 2, 3, 4, 3, 2):  # revisits, and the next page after the last one seen
            assert await ids_of(owner, **order, page=page) == await ids_of(
                plain, **order, page=page
            )
        assert offsets == []
        await ids_of(owner, **order, page=6)  # never seen, nor the one before it: OFFSET
        assert len(offsets) == 1


async def test_remembered_starts_never_outlive_a_write(
    make_api: AppFactory, database_url: str
) -> None:
    reader_api = await make_api(database_url)
    writer_api = await make_api(database_url)
    plain_api = await make_api(database_url, ANALYTICS_CACHE_TTL=0)
    owner = await reader_api.register()
    writer = dataclasses.replace(owner, api=writer_api)
    plain = dataclasses.replace(owner, api=plain_api)
    contact = await create_contact(owner)
    deals = [
        (await create_deal(owner, contact, f"Deal {index}", amount=str(index)))["id"]
        for index in range(12)
    ]
    order = {"order_by": "amount", "order": "desc", "page_size": 3}
    before = [await ids_of(owner, **order, page=page) for page in (1, 2, 3, 4)]

    # writes through the other instance: the reader's cache is never told
    await patch_deal(writer, deals[11], amount="5.5")  # the first deal moves to page 3
    await create_deal(writer, contact, "Top", amount="100")
    assert (await writer.delete(f"/deals/{deals[3]}")).status_code == 204
    await patch_deal(writer, deals[6], title="Renamed")  # moves nothing, still a write

    after = [await ids_of(owner, **order, page=page) for page in (1, 2, 3, 4, 5)]
    assert after != before[:4]
    assert after == [await ids_of(plain, **order, page=page) for page in (1, 2, 3, 4, 5)]


# --- contact totals ------------------------------------------------------------------------


async def contact_total(user: User, **params: Any) -> int:
    return await list_total(user, "/contacts", **params)


async def test_contact_totals_are_counted_once_and_never_stale(
    make_api: AppFactory, database_url: str
) -> None:
    reader = await make_api(database_url)
    writer_api = await make_api(database_url)
    owner = await reader.register()
    manager = await reader.member_of(owner, "manager")
    writer = dataclasses.replace(owner, api=writer_api)
    contact = await create_contact(owner, "Анна Смирнова")
    await create_contact(owner, "Bob")

    filters: list[dict[str, Any]] = [
        {"search": "анна"},
        {"search": "zed"},
        {"search": "@example"},
        {"search": "555"},
        {"owner_id": manager.id},
        {},
    ]
    before = [await contact_total(owner, **f) for f in filters]
    assert before == [1, 0, 0, 0, 0, 2]
    with counting_queries(reader, "contacts") as counts:
        assert [await contact_total(owner, **f) for f in filters] == before
        assert counts == []  # all cached in the reader

    # writes through the other instance: the reader's cache is never told
    async def patch(**fields: Any) -> None:
        response = await writer.patch(f"/contacts/{contact}", json=fields)
        assert response.status_code == 200, response.text

    await patch(name="Zed")
    assert await contact_total(owner, search="анна") == 0
    assert await contact_total(owner, search="zed") == 1
    await patch(email="zed@example.com")
    assert await contact_total(owner, search="@example") == 1
    await patch(phone="+1 555 0100")
    assert await contact_total(owner, search="555") == 1
    await patch(owner_id=manager.id)
    assert await contact_total(owner, owner_id=manager.id) == 1
    await create_contact(writer, "Carol")
    assert await contact_total(owner) == 3
    assert (await writer.delete(f"/contacts/{contact}")).status_code == 204
    assert await contact_total(owner) == 2
    assert await contact_total(owner, search="zed") == 0

    # another organization's contact writes leave these totals cached
    stranger = await writer_api.register(organization_name="Other")
    await create_contact(stranger, "Zed")
    with counting_queries(reader, "contacts") as counts:
        assert await contact_total(owner, search="zed") == 0
        assert counts == []
