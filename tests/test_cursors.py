"""Cursor pagination (`limit`, `cursor`) of the deal, contact, task and activity lists, on
SQLite and on PostgreSQL.

- a walk by cursor returns exactly the page-mode order, for every sort option of every list
  (ties in the sort value and tasks without a due date included);
- a walk while 4 writers insert and delete rows returns every row that existed throughout
  exactly once and no row twice;
- a cursor continues only the listing that issued it: altered, forged, replayed with other
  filters or sort, on another list, deal or organization → 422 `INVALID_CURSOR`;
- `limit` is 1..100; `page`/`page_size` do not mix with `limit`/`cursor` (422); `cursor`
  alone pages by 20;
- another organization's rows never appear; pages after the first are read from their
  position, never by OFFSET; the OpenAPI schema describes both envelopes.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event

from app.core.text import fold
from app.models import Activity, ActivityType, Contact, Deal, DealStage, DealStatus, Task
from app.services import events
from app.services.read_models import ReadModels
from tests.support import (
    Api,
    User,
    assert_problem,
    create_contact,
    create_deal,
    engine_of,
    sessions_of,
    statements_sent,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def seed(api: Api, user: User, size: int = 23) -> int:
    """Contacts, deals, tasks and activities of `user`'s organization with many ties in
    every sort value (and tasks without a due date); returns the id of the deal with the
    activities."""
    org, owner = user.organization_id, user.id
    async with sessions_of(api)() as session:
        contacts = [
            Contact(
                organization_id=org,
                owner_id=owner,
                name=f"Contact {i % 4}",
                search_text=fold(f"Contact {i % 4}"),
                created_at=T0 + timedelta(minutes=i % 5),
                updated_at=T0,
            )
            for i in range(size)
        ]
        session.add_all(contacts)
        await session.flush()
        deals = [
            Deal(
                organization_id=org,
                owner_id=owner,
                contact_id=contacts[0].id,
                title=f"Deal {i % 6}",
                search_text=fold(f"Deal {i % 6}"),
                amount=Decimal(i % 4) * Decimal("10.50"),
                status=(DealStatus.NEW, DealStatus.WON)[i % 2],
                stage=DealStage.QUALIFICATION,
                created_at=T0 + timedelta(minutes=i % 7),
                updated_at=T0 + timedelta(minutes=i % 3),
            )
            for i in range(size)
        ]
        session.add_all(deals)
        await session.flush()
        session.add_all(
            Task(
                organization_id=org,
                deal_id=deals[i % 2].id,
                title=f"Task {i}",
                due_date=None if i % 3 == 0 else date(2030, 1, 1 + i % 4),
                is_done=i % 2 == 0,
            )
            for i in range(size)
        )
        session.add_all(
            Activity(
                organization_id=org,
                deal_id=deals[0].id,
                author_id=owner,
                type=ActivityType.COMMENT,
                payload={"text": f"note {i}"},
                created_at=T0 + timedelta(minutes=i % 4),
            )
            for i in range(size)
        )
        models = ReadModels(session, org, api.app.state.resources.cache)
        await models.rebuild()
        await models.contacts_written()
        events.backfill(session)
        await session.commit()
        return deals[0].id


async def page_mode_ids(user: User, path: str, params: dict[str, Any]) -> list[int]:
    ids: list[int] = []
    page = 1
    while True:
        response = await user.get(path, params={**params, "page": page, "page_size": 7})
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [item["id"] for item in body["items"]]
        if page >= body["pages"]:
            return ids
        page += 1


async def cursor_walk(user: User, path: str, params: dict[str, Any], limit: int = 4) -> list[int]:
    ids: list[int] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await user.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor", "limit"}
        assert body["limit"] == limit
        assert len(body["items"]) <= limit
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
        assert len(body["items"]) == limit


DEAL_SORTS = [
    {"order_by": column, "order": order}
    for column in ("created_at", "updated_at", "amount", "title")
    for order in ("asc", "desc")
]
CONTACT_SORTS = [
    {"order_by": column, "order": order}
    for column in ("created_at", "name")
    for order in ("asc", "desc")
]


async def test_a_cursor_walk_returns_the_page_mode_order_of_every_list_and_sort(
    any_api: Api,
) -> None:
    user = await any_api.register()
    deal_id = await seed(any_api, user)
    cases: list[tuple[str, dict[str, Any]]] = [
        *(("/deals", sort) for sort in DEAL_SORTS),
        ("/deals", {"status": "won", "order_by": "amount", "order": "asc"}),
        *(("/contacts", sort) for sort in CONTACT_SORTS),
        ("/contacts", {"search": "contact 1"}),
        ("/tasks", {}),
        ("/tasks", {"only_open": "true"}),
        (f"/deals/{deal_id}/activities", {}),
    ]
    for path, params in cases:
        expected = await page_mode_ids(user, path, params)
        assert len(expected) >= 4, (path, params)
        assert await cursor_walk(user, path, params) == expected, (path, params)
        assert await cursor_walk(user, path, params, limit=100) == expected, (path, params)
    # Tasks without a due date come last, and the walk crosses into them mid-page.
    tasks = (await user.get("/tasks", params={"limit": 100})).json()["items"]
    dues = [task["due_date"] for task in tasks]
    assert None in dues
    assert dues.index(None) == len([d for d in dues if d is not None])


@pytest.mark.postgres
async def test_pages_after_the_first_are_read_from_their_position_not_by_offset(
    pg_api: Api,
) -> None:
    # On PostgreSQL only: SQLite's dialect writes `LIMIT ? OFFSET ?` (OFFSET 0) for any LIMIT.
    user = await pg_api.register()
    await seed(pg_api, user)
    first = (await user.get("/deals", params={"limit": 5})).json()
    with statements_sent(
        engine_of(pg_api), lambda sql: "FROM deals" in sql and "count(" not in sql
    ) as sent:
        response = await user.get("/deals", params={"limit": 5, "cursor": first["next_cursor"]})
    assert response.status_code == 200
    assert sent
    assert all("OFFSET" not in statement.sql.upper() for statement in sent), [s.sql for s in sent]


@pytest.mark.parametrize(
    "params", [{"order_by": "created_at", "order": "desc"}, {"order_by": "amount", "order": "asc"}]
)
async def test_a_walk_during_inserts_and_deletes_returns_each_lasting_row_once_sqlite(
    make_api: Callable[..., Awaitable[Api]], sqlite_url: str, params: dict[str, str]
) -> None:
    await walk_while_writing(await make_api(sqlite_url), params)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "params", [{"order_by": "created_at", "order": "desc"}, {"order_by": "amount", "order": "asc"}]
)
async def test_a_walk_during_inserts_and_deletes_returns_each_lasting_row_once_postgres(
    pg_api: Api, params: dict[str, str]
) -> None:
    await walk_while_writing(pg_api, params)


async def walk_while_writing(api: Api, params: dict[str, str]) -> None:
    user = await api.register()
    contact_id = await create_contact(user)
    lasting = {(await create_deal(user, contact_id, amount=i % 9))["id"] for i in range(40)}
    doomed = [(await create_deal(user, contact_id, amount=i % 9))["id"] for i in range(24)]
    walking = True
    rng = random.Random(7)

    async def writer(mine: list[int]) -> None:
        while walking:
            created = await create_deal(user, contact_id, amount=rng.randint(0, 9))
            mine.append(created["id"])
            victim = mine.pop(rng.randrange(len(mine)))
            assert (await user.delete(f"/deals/{victim}")).status_code == 204
            await asyncio.sleep(0)

    async def walk() -> list[tuple[int, str]]:
        nonlocal walking
        try:
            seen: list[tuple[int, str]] = []
            cursor: str | None = None
            while True:
                query = {**params, "limit": 3} | ({"cursor": cursor} if cursor else {})
                response = await user.get("/deals", params=query)
                assert response.status_code == 200, response.text
                body = response.json()
                # A row is its id and creation time: SQLite hands the id of a deleted deal
                # with the highest id to the next one, which is another row.
                seen += [(item["id"], item["created_at"]) for item in body["items"]]
                cursor = body["next_cursor"]
                if cursor is None:
                    return seen
                await asyncio.sleep(0.01)  # let the writers in between pages
        finally:
            walking = False

    shares = [doomed[i::4] for i in range(4)]
    seen, *_ = await asyncio.gather(walk(), *(writer(share) for share in shares))
    assert len(seen) == len(set(seen)), "a row was returned twice"
    seen_ids = {row_id for row_id, _ in seen}
    assert lasting <= seen_ids, f"rows skipped: {sorted(lasting - seen_ids)}"


async def test_a_cursor_continues_only_the_listing_that_issued_it(any_api: Api) -> None:
    user = await any_api.register()
    deal_id = await seed(any_api, user)
    other_deal = (await user.get("/deals", params={"limit": 2})).json()["items"][1]["id"]
    if other_deal == deal_id:
        other_deal = (await user.get("/deals", params={"limit": 2})).json()["items"][0]["id"]
    stranger = await any_api.register(organization_name="Other")
    await seed(any_api, stranger)

    cursor = (await user.get("/deals", params={"limit": 2, "order_by": "amount"})).json()[
        "next_cursor"
    ]
    assert cursor
    payload, signature = cursor.split(".")
    forged_position = base64.urlsafe_b64encode(b'["m","0.00",1]').rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    refused: list[tuple[User, str, dict[str, Any]]] = [
        (user, "/deals", {"order_by": "amount", "cursor": f"{forged_position}.{signature}"}),
        (user, "/deals", {"order_by": "amount", "cursor": f"{payload}.{flipped}"}),
        (user, "/deals", {"order_by": "amount", "cursor": "not-a-cursor"}),
        (user, "/deals", {"order_by": "amount", "cursor": "ü.ö"}),
        (user, "/deals", {"order_by": "amount", "cursor": "...."}),
        (user, "/deals", {"order_by": "amount", "status": "won", "cursor": cursor}),
        (user, "/deals", {"order_by": "amount", "order": "asc", "cursor": cursor}),
        (user, "/deals", {"order_by": "title", "cursor": cursor}),
        (user, "/contacts", {"cursor": cursor}),
        (stranger, "/deals", {"order_by": "amount", "cursor": cursor}),
    ]
    activities = (await user.get(f"/deals/{deal_id}/activities", params={"limit": 2})).json()
    refused.append((user, f"/deals/{other_deal}/activities", {"cursor": activities["next_cursor"]}))
    for caller, path, params in refused:
        response = await caller.get(path, params={"limit": 2, **params})
        assert_problem(response, 422, "INVALID_CURSOR")

    again = await user.get("/deals", params={"limit": 2, "order_by": "amount", "cursor": cursor})
    assert again.status_code == 200


async def test_limit_bounds_and_the_two_modes_do_not_mix(any_api: Api) -> None:
    user = await any_api.register()
    await seed(any_api, user, size=25)
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": ""}):
        assert_problem(await user.get("/deals", params=params), 422, "VALIDATION_ERROR")
    cursor = (await user.get("/deals", params={"limit": 1})).json()["next_cursor"]
    for params in (
        {"page": 1, "limit": 5},
        {"page_size": 5, "limit": 5},
        {"page": 2, "cursor": cursor},
    ):
        body = assert_problem(await user.get("/deals", params=params), 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"][0] == "query"
    for path in ("/contacts", "/tasks"):
        assert_problem(await user.get(path, params={"page": 1, "limit": 5}), 422)
    assert len((await user.get("/deals", params={"limit": 1})).json()["items"]) == 1
    assert len((await user.get("/deals", params={"limit": 100})).json()["items"]) == 25
    # `cursor` without `limit`: pages of 20.
    follow = (await user.get("/deals", params={"cursor": cursor})).json()
    assert follow["limit"] == 20
    assert len(follow["items"]) == 20
    # Page mode answers exactly as before.
    page = (await user.get("/deals", params={"page": 2, "page_size": 10})).json()
    assert set(page) == {"items", "total", "page", "page_size", "pages"}
    assert (page["total"], page["page"], page["pages"]) == (25, 2, 3)


async def test_another_organizations_rows_never_appear(any_api: Api) -> None:
    user = await any_api.register()
    stranger = await any_api.register(organization_name="Other")
    await seed(any_api, stranger)
    await seed(any_api, user, size=9)
    for path in ("/deals", "/contacts", "/tasks"):
        mine = await cursor_walk(user, path, {}, limit=2)
        theirs = await cursor_walk(stranger, path, {}, limit=5)
        assert len(mine) == 9
        assert len(theirs) == 23
        assert not set(mine) & set(theirs)
    # A deal of another organization has no timeline to walk.
    their_deal = (await stranger.get("/deals", params={"limit": 1})).json()["items"][0]["id"]
    response = await user.get(f"/deals/{their_deal}/activities", params={"limit": 5})
    assert_problem(response, 404)


async def test_the_openapi_schema_describes_both_envelopes(any_api: Api) -> None:
    schema = (await any_api.client.get(any_api.url("/openapi.json"))).json()
    for path in ("/deals", "/contacts", "/tasks", "/deals/{deal_id}/activities"):
        operation = schema["paths"][any_api.url(path)]["get"]
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"page", "page_size", "limit", "cursor"} <= names
        content = operation["responses"]["200"]["content"]["application/json"]["schema"]
        refs = {option["$ref"].rsplit("/", 1)[1] for option in content["anyOf"]}
        assert any(ref.startswith("Page_") for ref in refs), refs
        assert any(ref.startswith("CursorPage_") for ref in refs), refs
    cursor_page = next(
        body
        for name, body in schema["components"]["schemas"].items()
        if name == "CursorPage_DealRead_"
    )
    assert set(cursor_page["required"]) == {"items", "next_cursor", "limit"}


@pytest.mark.postgres
async def test_every_cursor_page_is_one_index_range_in_the_lists_order(pg_api: Api) -> None:
    """The plan of each list's page after a cursor, for every sort: an index scan whose
    condition starts at the position, and no Sort (the index gives the order): its cost does
    not grow with the depth. Sequential scans are disabled, as a tiny test table would
    otherwise be read whole."""
    user = await pg_api.register()
    deal_id = await seed(pg_api, user)
    cases: list[tuple[str, dict[str, Any], str]] = [
        *(
            ("/deals", sort, f"ix_deals_org_{sort['order_by'].split('_')[0]}")
            for sort in DEAL_SORTS
        ),
        *(
            ("/contacts", sort, f"ix_contacts_org_{sort['order_by'].split('_')[0]}")
            for sort in CONTACT_SORTS
        ),
        ("/tasks", {}, "ix_tasks_org_due"),
        (f"/deals/{deal_id}/activities", {}, "ix_activities_org_deal_created"),
    ]
    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "LIMIT" in statement and "count(" not in statement:
            captured.append((statement, parameters))

    engine = engine_of(pg_api)
    for path, params, index in cases:
        first = (await user.get(path, params={**params, "limit": 3})).json()
        captured.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            response = await user.get(
                path, params={**params, "limit": 3, "cursor": first["next_cursor"]}
            )
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)
        assert response.status_code == 200, response.text
        assert captured, path
        statement, parameters = captured[0]
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SET enable_seqscan = off")
            result = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(row[0] for row in result)
            await conn.rollback()
        assert (
            f"Index Scan Backward using {index} " in plan or f"Index Scan using {index} " in plan
        ), (
            path,
            params,
            plan,
        )
        assert "Sort" not in plan, (path, params, plan)
        conditions = [line for line in plan.splitlines() if "Index Cond" in line]
        assert any("<=" in line or ">=" in line for line in conditions), (path, params, plan)
