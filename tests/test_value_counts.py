"""The deal counts per select and boolean custom field value (`deal_value_counts`): always equal
to a fresh count over the live deals, through creates, changes, the trash, restores, a
definition's deletion, the migration's backfill and the rebuild; and what the total of
`GET /deals?cf.<key>=<value>` (that filter alone) is read from.

Runs on the suite's database: SQLite by default, PostgreSQL with TEST_DATABASE_URL; the test of
concurrent writers needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import anyio.to_thread
from sqlalchemy import text

from alembic import command
from app.core.cache import NullCache
from app.services.read_models import ReadModels
from tests.conftest import AppFactory, alembic_config
from tests.support import Api, User, create_contact, engine_of, sessions_of
from tests.test_imports import imported

SOURCE = {"key": "source", "type": "select", "options": ["web", "referral", "event"]}
VIP = {"key": "vip", "type": "boolean"}
NOTE = {"key": "note", "type": "text"}  # not counted: a text's values are as many as deals


async def define(user: User, field: dict[str, Any]) -> int:
    body = {"entity": "deal", "label": field["key"].title(), **field}
    response = await user.post("/custom-fields", json=body)
    assert response.status_code == 201, response.text
    field_id: int = response.json()["id"]
    return field_id


async def new_deal(user: User, contact: int, **values: Any) -> int:
    body = {"contact_id": contact, "title": "D", "custom_fields": values}
    response = await user.post("/deals", json=body)
    assert response.status_code == 201, response.text
    deal_id: int = response.json()["id"]
    return deal_id


async def set_values(user: User, deal_id: int, **values: Any) -> None:
    response = await user.patch(f"/deals/{deal_id}", json={"custom_fields": values})
    assert response.status_code == 200, response.text


async def stored(api: Api) -> Counter[tuple[int, str, str]]:
    """The counts, summed over their slots, without the zeros."""
    async with engine_of(api).connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT organization_id, key, value, sum(deal_count) FROM deal_value_counts "
                "GROUP BY 1, 2, 3 HAVING sum(deal_count) <> 0"
            )
        )
        return Counter({(org, key, value): int(total) for org, key, value, total in rows})


async def fresh(api: Api) -> Counter[tuple[int, str, str]]:
    """The same counts, from the live deals and the select and boolean definitions."""
    async with engine_of(api).connect() as conn:
        counted = {
            (org, key)
            for org, key in await conn.execute(
                text(
                    "SELECT organization_id, key FROM custom_field_definitions "
                    "WHERE entity = 'deal' AND type IN ('select', 'boolean')"
                )
            )
        }
        deals = await conn.execute(
            text("SELECT organization_id, custom_fields FROM deals WHERE deleted_at IS NULL")
        )
        counts: Counter[tuple[int, str, str]] = Counter()
        for org, values in deals:
            if isinstance(values, str):  # SQLite's JSON comes back as text here
                values = json.loads(values)
            for key, value in (values or {}).items():
                if (org, key) in counted:
                    text_value = value if isinstance(value, str) else ("true" if value else "false")
                    counts[org, key, text_value] += 1
        return counts


async def assert_exact(api: Api) -> None:
    assert await stored(api) == await fresh(api)


async def total(user: User, **params: Any) -> int:
    response = await user.get("/deals", params={"page_size": 1, **params})
    assert response.status_code == 200, response.text
    value: int = response.json()["total"]
    return value


async def test_counts_stay_exact_through_every_deal_write(api: Api) -> None:
    owner = await api.register()
    other = await api.register(organization_name="Other")
    source_id = await define(owner, SOURCE)
    for field in (VIP, NOTE):
        await define(owner, field)
    for field in (SOURCE, VIP, NOTE):
        await define(other, field)
    contact = await create_contact(owner)
    deals = [
        await new_deal(owner, contact, source=source, vip=index % 2 == 0, note=f"n{index}")
        for index, source in enumerate(["web", "web", "referral", "event", "web", "referral"])
    ]
    deals.append(await new_deal(owner, contact))  # no values
    await new_deal(other, await create_contact(other), source="web", vip=True)
    await assert_exact(api)
    assert await stored(api) != Counter()

    await set_values(owner, deals[0], source="event")  # another option
    await set_values(owner, deals[1], vip=True)  # the same value: no change
    await set_values(owner, deals[2], source=None, vip=None)  # values removed
    await set_values(owner, deals[6], source="web", vip=False)  # values added
    await set_values(owner, deals[3], note="changed")  # not counted
    response = await owner.patch(f"/deals/{deals[4]}", json={"title": "Renamed"})
    assert response.status_code == 200, response.text
    await assert_exact(api)

    for deal_id in deals[:3]:  # to the trash: counted out
        assert (await owner.delete(f"/deals/{deal_id}")).status_code == 204
    await assert_exact(api)
    assert (await owner.post(f"/deals/{deals[0]}/restore")).status_code == 200
    await assert_exact(api)

    # A definition's deletion takes its values and its counts; the other field's stay.
    assert (await owner.delete(f"/custom-fields/{source_id}")).status_code == 204
    await assert_exact(api)
    assert {key for _, key, _ in await stored(api)} == {"source", "vip"}  # `other` keeps its

    # Defined again, it starts from nothing.
    await define(owner, SOURCE)
    await set_values(owner, deals[3], source="web")
    await assert_exact(api)


async def test_a_lone_equality_filter_is_summed_from_the_counts(
    make_api: AppFactory, database_url: str
) -> None:
    api = await make_api(database_url, ANALYTICS_CACHE_TTL=0)  # every total computed
    owner = await api.register()
    await define(owner, SOURCE)
    await define(owner, VIP)
    contact = await create_contact(owner)
    for index in range(7):
        await new_deal(owner, contact, source=("web", "event")[index % 2], vip=index < 3)
    assert await total(owner, **{"cf.source": "web"}) == 4
    assert await total(owner, **{"cf.source": "referral"}) == 0
    assert await total(owner, **{"cf.vip": "true"}) == 3
    assert await total(owner, **{"cf.vip": "false"}) == 4

    # The lone filter's total is the counts' (seen by changing them behind the app's back);
    # with any other filter, or on a field that is not counted, the deals are counted.
    async with engine_of(api).begin() as conn:
        await conn.execute(text("UPDATE deal_value_counts SET deal_count = deal_count + 10"))
    assert await total(owner, **{"cf.source": "web"}) > 4
    assert await total(owner, **{"cf.source": "web", "status": "new"}) == 4
    assert await total(owner, **{"cf.source": "web", "cf.vip": "true"}) == 2
    assert await total(owner, **{"cf.source": "web", "order_by": "cf.source"}) > 4

    # The rebuild recomputes them from the deals.
    async with sessions_of(api)() as session:
        await ReadModels(session, owner.organization_id, NullCache()).rebuild()
        await session.commit()
    await assert_exact(api)
    assert await total(owner, **{"cf.source": "web"}) == 4
    assert await total(owner, **{"cf.vip": "true"}) == 3


async def test_the_migration_fills_the_counts_from_the_live_deals(
    api: Api, database_url: str
) -> None:
    owner = await api.register()
    await define(owner, SOURCE)
    await define(owner, VIP)
    await define(owner, NOTE)
    contact = await create_contact(owner)
    deals = [
        await new_deal(owner, contact, source=source, vip=source == "web", note="x")
        for source in ("web", "web", "event", "referral", "web")
    ]
    assert (await owner.delete(f"/deals/{deals[0]}")).status_code == 204
    await engine_of(api).dispose()
    config = alembic_config(database_url)

    def down_and_up() -> None:
        try:
            command.downgrade(config, "0018")
        finally:
            command.upgrade(config, "head")

    await anyio.to_thread.run_sync(down_and_up)
    await assert_exact(api)
    assert (await stored(api))[owner.organization_id, "source", "web"] == 2


async def test_concurrent_writers_keep_the_counts_exact(make_api: AppFactory, pg_url: str) -> None:
    """On PostgreSQL, creates, changes and deletes of one organization's deals run at once: the
    count rows (split over slots) stay exact, and no writer deadlocks on them."""
    api = await make_api(pg_url)
    owner = await api.register()
    await define(owner, SOURCE)
    await define(owner, VIP)
    contact = await create_contact(owner)
    options = SOURCE["options"]
    deals = await asyncio.gather(
        *(new_deal(owner, contact, source=options[i % 3], vip=i % 2 == 0) for i in range(40))
    )

    async def change(index: int, deal_id: int) -> None:
        if index % 4 == 0:
            response = await owner.delete(f"/deals/{deal_id}")
            assert response.status_code == 204, response.text
        else:
            await set_values(owner, deal_id, source=options[(index + 1) % 3], vip=index % 3 == 0)

    await asyncio.gather(*(change(i, d) for i, d in enumerate(deals)))
    await assert_exact(api)


async def contact_with_email(user: User, name: str, email: str) -> int:
    response = await user.post("/contacts", json={"name": name, "email": email})
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


async def test_imports_merges_and_stage_deletions_keep_the_counts(api: Api) -> None:
    owner = await api.register()
    await define(owner, SOURCE)
    await define(owner, VIP)
    contact = await contact_with_email(owner, "Ann", "ann@example.com")
    rows = "".join(
        f"D{i},ann@example.com,{('web', 'event')[i % 2]},{str(i % 3 == 0).lower()}\n"
        for i in range(9)
    )
    body = await imported(
        owner, "title,contact_email,cf.source,cf.vip\n" + rows, kind="deals", filename="d.csv"
    )
    assert body["created"] == 9, body
    await assert_exact(api)

    # A contact merge moves deals (through their PATCH), a stage deletion moves them too.
    other = await contact_with_email(owner, "Ann again", "ann2@example.com")
    await new_deal(owner, other, source="referral")
    response = await owner.post(f"/contacts/{contact}/merge", json={"source_ids": [other]})
    assert response.status_code == 200, response.text
    pipeline = (await owner.get("/pipelines")).json()[0]
    stage = f"/pipelines/{pipeline['id']}/stages/qualification?move_deals_to=proposal"
    assert (await owner.delete(stage)).status_code in (200, 204)
    await assert_exact(api)


async def test_an_import_batch_rolled_back_for_a_deadlock_runs_again(pg_api: Api) -> None:
    """PostgreSQL itself rolls the batch back once (deadlock_detected, raised by a trigger
    whose sequence, which no rollback resets, says whether it already did): the batch runs
    again at once, and its deals and their counts are there once."""
    owner = await pg_api.register()
    await define(owner, SOURCE)
    await contact_with_email(owner, "Ann", "ann@example.com")
    async with engine_of(pg_api).begin() as conn:
        await conn.execute(text("CREATE SEQUENCE deadlock_once"))
        await conn.execute(
            text(
                "CREATE FUNCTION deadlock_once() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF nextval('deadlock_once') = 2 THEN "
                "RAISE EXCEPTION 'test deadlock' USING ERRCODE = '40P01'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER deadlock_once BEFORE INSERT ON deals "
                "FOR EACH ROW EXECUTE FUNCTION deadlock_once()"
            )
        )
    try:
        rows = "".join(f"D{i},ann@example.com,web\n" for i in range(5))
        body = await imported(
            owner, "title,contact_email,cf.source\n" + rows, kind="deals", filename="d.csv"
        )
    finally:
        async with engine_of(pg_api).begin() as conn:
            await conn.execute(text("DROP TRIGGER deadlock_once ON deals"))
            await conn.execute(text("DROP FUNCTION deadlock_once()"))
            await conn.execute(text("DROP SEQUENCE deadlock_once"))
    assert (body["status"], body["created"], body["failed"]) == ("succeeded", 5, 0), body
    assert await total(owner, **{"cf.source": "web"}) == 5
    await assert_exact(pg_api)
