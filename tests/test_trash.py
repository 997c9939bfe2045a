"""The trash (contract section 16), on SQLite and on PostgreSQL.

- a deleted contact, deal or task is missing everywhere: by id, in lists (page and cursor
  mode), search, totals, analytics, a trashed deal's tasks and timeline;
- `GET /trash` lists it with when it was deleted and when it will be purged;
- restore brings it back (a deal with its tasks and timeline), with the same permissions as
  delete; 404 when it is not in the trash or belongs to another organization;
- a deal cannot come back while its contact is in the trash (409 `CONTACT_IN_TRASH`), nor a
  task while its deal is (409 `DEAL_IN_TRASH`);
- analytics stay equal to a fresh aggregate over the live deals through trash, restore and
  purge;
- the purge deletes what retention has passed for good, dependent rows included: by
  `trash.purge` (time given), `minicrm prune`, and the worker loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.types import utcnow
from app.services import trash
from tests.support import (
    Api,
    User,
    assert_problem,
    count_rows,
    count_trashed,
    create_contact,
    create_deal,
    engine_of,
    run_cli,
    sessions_of,
)

STATUSES = ("new", "in_progress", "won", "lost")
STAGES = ("qualification", "proposal", "negotiation", "closed")


async def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if status != 204 else None


async def new_task(user: User, deal_id: int, title: str = "Call") -> dict[str, Any]:
    return await ok(await user.post("/tasks", json={"deal_id": deal_id, "title": title}), 201)


async def comment(user: User, deal_id: int, text_: str) -> dict[str, Any]:
    body = {"type": "comment", "payload": {"text": text_}}
    return await ok(await user.post(f"/deals/{deal_id}/activities", json=body), 201)


async def ids(user: User, path: str, **params: Any) -> list[int]:
    body = await ok(await user.get(path, params={"page_size": 100, **params}))
    return [item["id"] for item in body["items"]]


async def cursor_ids(user: User, path: str, **params: Any) -> list[int]:
    body = await ok(await user.get(path, params={"limit": 100, **params}))
    return [item["id"] for item in body["items"]]


async def total(user: User, path: str, **params: Any) -> int:
    value: int = (await ok(await user.get(path, params=params)))["total"]
    return value


async def purge(api: Api, *, retention_days: int, now: datetime | None = None) -> trash.Purged:
    async with sessions_of(api)() as session:
        purged = await trash.purge(session, retention_days, now)
        await session.commit()
    return purged


# --- gone from every read ----------------------------------------------------------------


async def test_deleted_records_are_missing_everywhere(any_api: Api) -> None:
    owner = await any_api.register()
    contact = await create_contact(owner, "Zebra Holdings")
    lonely = await create_contact(owner, "Lonely Zebra")
    deal = await create_deal(owner, contact, "Zebra deal", amount="100", currency="EUR")
    kept = await create_deal(owner, contact, "Kept deal", amount="5", currency="EUR")
    task = await new_task(owner, deal["id"])
    kept_task = await new_task(owner, kept["id"])
    await comment(owner, deal["id"], "hello")
    # Cached before the deletes: what follows must not be served from these entries.
    assert await total(owner, "/deals") == 2
    assert await total(owner, "/contacts") == 2
    summary = await ok(await owner.get("/analytics/deals/summary"))
    assert summary["total"] == {"count": 2, "total_amount": 105.0}

    await ok(await owner.delete(f"/deals/{deal['id']}"), 204)
    await ok(await owner.delete(f"/contacts/{lonely}"), 204)

    # By id: as if missing, for reads and writes.
    assert_problem(await owner.get(f"/deals/{deal['id']}"), 404, "DEAL_NOT_FOUND")
    head = await owner.api.client.head(
        owner.api.url(f"/deals/{deal['id']}"), headers=owner.headers()
    )
    assert head.status_code == 404
    assert_problem(await owner.patch(f"/deals/{deal['id']}", json={"title": "x"}), 404)
    assert_problem(await owner.delete(f"/deals/{deal['id']}"), 404)
    assert_problem(await owner.get(f"/tasks/{task['id']}"), 404, "TASK_NOT_FOUND")
    assert_problem(await owner.patch(f"/tasks/{task['id']}", json={"is_done": True}), 404)
    assert_problem(await owner.get(f"/deals/{deal['id']}/activities"), 404, "DEAL_NOT_FOUND")
    assert_problem(await owner.get(f"/contacts/{lonely}"), 404, "CONTACT_NOT_FOUND")
    assert_problem(await owner.patch(f"/contacts/{lonely}", json={"name": "x"}), 404)
    # Nothing new can hang on them.
    assert_problem(await owner.post("/tasks", json={"deal_id": deal["id"], "title": "x"}), 404)
    assert_problem(
        await owner.post("/deals", json={"contact_id": lonely, "title": "x"}),
        400,
        "CONTACT_NOT_FOUND",
    )
    assert_problem(
        await owner.patch(f"/deals/{kept['id']}", json={"contact_id": lonely}),
        400,
        "CONTACT_NOT_FOUND",
    )

    # Lists (page and cursor mode), search, filters, totals.
    assert await ids(owner, "/deals") == [kept["id"]]
    assert await cursor_ids(owner, "/deals") == [kept["id"]]
    assert await ids(owner, "/deals", search="zebra") == []
    assert await ids(owner, "/deals", contact_id=contact) == [kept["id"]]
    assert await total(owner, "/deals") == 1
    assert await ids(owner, "/contacts") == [contact]
    assert await cursor_ids(owner, "/contacts") == [contact]
    assert await ids(owner, "/contacts", search="zebra") == [contact]
    assert await total(owner, "/contacts") == 1
    assert await ids(owner, "/tasks") == [kept_task["id"]]
    assert await cursor_ids(owner, "/tasks") == [kept_task["id"]]
    assert await ids(owner, "/tasks", deal_id=deal["id"]) == []

    # Analytics.
    summary = await ok(await owner.get("/analytics/deals/summary"))
    assert summary["total"] == {"count": 1, "total_amount": 5.0}
    assert summary["new_deals_last_n_days"] == 1
    funnel = await ok(await owner.get("/analytics/deals/funnel"))
    assert funnel["stages"][0]["count"] == 1


async def test_delete_still_honours_if_match(any_api: Api) -> None:
    owner = await any_api.register()
    contact = await create_contact(owner)
    response = await owner.get(f"/contacts/{contact}")
    etag = response.headers["etag"]
    await ok(await owner.patch(f"/contacts/{contact}", json={"name": "Changed"}))

    stale = await owner.delete(f"/contacts/{contact}", headers={"If-Match": etag})
    assert_problem(stale, 412, "PRECONDITION_FAILED")
    assert (await owner.get(f"/contacts/{contact}")).status_code == 200
    current = (await owner.get(f"/contacts/{contact}")).headers["etag"]
    await ok(await owner.delete(f"/contacts/{contact}", headers={"If-Match": current}), 204)

    # Restored, it is a new version: the ETag read before the delete no longer matches.
    restored = await owner.post(f"/contacts/{contact}/restore")
    assert restored.status_code == 200, restored.text
    assert restored.headers["etag"] != current
    refused = await owner.patch(
        f"/contacts/{contact}", json={"name": "x"}, headers={"If-Match": current}
    )
    assert_problem(refused, 412, "PRECONDITION_FAILED")


# --- the trash list ----------------------------------------------------------------------


async def test_the_trash_lists_what_was_deleted_and_when_it_goes(any_api: Api) -> None:
    owner = await any_api.register()
    contact = await create_contact(owner, "Gone contact")
    deal = await create_deal(owner, await create_contact(owner), "Gone deal")
    task = await new_task(owner, (await create_deal(owner, contact))["id"], "Gone task")
    assert await ok(await owner.get("/trash")) == {
        "items": [],
        "total": 0,
        "page": 1,
        "page_size": 20,
        "pages": 0,
    }
    deal_read = await ok(await owner.get(f"/deals/{deal['id']}"))
    task_read = await ok(await owner.get(f"/tasks/{task['id']}"))
    await ok(await owner.delete(f"/tasks/{task['id']}"), 204)
    await ok(await owner.delete(f"/deals/{deal['id']}"), 204)
    deals_of_contact = await ids(owner, "/deals", contact_id=contact)
    for deal_id in deals_of_contact:
        await ok(await owner.delete(f"/deals/{deal_id}"), 204)
    contact_read = await ok(await owner.get(f"/contacts/{contact}"))
    await ok(await owner.delete(f"/contacts/{contact}"), 204)

    body = await ok(await owner.get("/trash"))
    assert body["total"] == 4
    # Most recently deleted first.
    assert [(item["type"], item["id"]) for item in body["items"]] == [
        ("contact", contact),
        ("deal", deals_of_contact[0]),
        ("deal", deal["id"]),
        ("task", task["id"]),
    ]
    by_key = {(item["type"], item["id"]): item for item in body["items"]}
    assert by_key[("contact", contact)]["object"] == contact_read
    assert by_key[("deal", deal["id"])]["object"] == deal_read
    assert by_key[("task", task["id"])]["object"] == task_read
    for item in body["items"]:
        deleted_at = datetime.fromisoformat(item["deleted_at"])
        assert abs(utcnow() - deleted_at) < timedelta(minutes=5)
        assert datetime.fromisoformat(item["purge_at"]) - deleted_at == timedelta(days=30)

    deals_only = await ok(await owner.get("/trash", params={"type": "deal"}))
    assert {item["id"] for item in deals_only["items"]} == {deal["id"], deals_of_contact[0]}
    assert deals_only["total"] == 2
    paged = await ok(await owner.get("/trash", params={"page": 2, "page_size": 3}))
    assert [(i["type"], i["id"]) for i in paged["items"]] == [("task", task["id"])]
    assert paged["pages"] == 2
    assert_problem(await owner.get("/trash", params={"type": "company"}), 422)
    assert_problem(await owner.get("/trash", params={"page_size": 101}), 422)

    # Restored, it leaves the trash.
    await ok(await owner.post(f"/tasks/{task['id']}/restore"), 409)  # its deal is in the trash
    await ok(await owner.post(f"/contacts/{contact}/restore"))
    assert await total(owner, "/trash") == 3


async def test_the_trash_is_per_organization(any_api: Api) -> None:
    owner = await any_api.register()
    stranger = await any_api.register(organization_name="Other")
    contact = await create_contact(stranger)
    deal = await create_deal(stranger, await create_contact(stranger))
    task = await new_task(stranger, deal["id"])
    await ok(await stranger.delete(f"/tasks/{task['id']}"), 204)
    await ok(await stranger.delete(f"/deals/{deal['id']}"), 204)
    await ok(await stranger.delete(f"/contacts/{contact}"), 204)

    assert (await ok(await owner.get("/trash")))["items"] == []
    assert_problem(await owner.post(f"/contacts/{contact}/restore"), 404, "CONTACT_NOT_FOUND")
    assert_problem(await owner.post(f"/deals/{deal['id']}/restore"), 404, "DEAL_NOT_FOUND")
    assert_problem(await owner.post(f"/tasks/{task['id']}/restore"), 404, "TASK_NOT_FOUND")
    assert_problem(await owner.post("/contacts/999999/restore"), 404, "CONTACT_NOT_FOUND")
    assert await total(stranger, "/trash") == 3


# --- restore -----------------------------------------------------------------------------


async def test_restoring_a_deal_brings_back_its_tasks_and_timeline(any_api: Api) -> None:
    owner = await any_api.register()
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact, amount="40", currency="EUR")
    await ok(await owner.patch(f"/deals/{deal['id']}", json={"stage": "proposal"}))
    went_with = await new_task(owner, deal["id"], "Goes with the deal")
    alone = await new_task(owner, deal["id"], "Deleted on its own")
    await comment(owner, deal["id"], "remember me")
    timeline = await ok(await owner.get(f"/deals/{deal['id']}/activities"))
    await ok(await owner.delete(f"/tasks/{alone['id']}"), 204)
    summary_before = await ok(await owner.get("/analytics/deals/summary"))

    await ok(await owner.delete(f"/deals/{deal['id']}"), 204)
    assert (await ok(await owner.get("/analytics/deals/summary")))["total"]["count"] == 0
    restored = await ok(await owner.post(f"/deals/{deal['id']}/restore"))

    assert restored == await ok(await owner.get(f"/deals/{deal['id']}"))
    assert restored["stage"] == "proposal"
    assert await ok(await owner.get(f"/deals/{deal['id']}/activities")) == timeline
    assert await ids(owner, "/tasks", deal_id=deal["id"]) == [went_with["id"]]
    assert_problem(await owner.get(f"/tasks/{alone['id']}"), 404)  # still in the trash
    assert await ids(owner, "/deals") == [deal["id"]]
    assert await total(owner, "/deals") == 1
    summary = await ok(await owner.get("/analytics/deals/summary"))
    assert summary["by_status"] == summary_before["by_status"]
    assert summary["new_deals_last_n_days"] == summary_before["new_deals_last_n_days"]
    assert_problem(await owner.post(f"/deals/{deal['id']}/restore"), 404)  # not in the trash

    # The task deleted on its own comes back on its own, now that its deal is live.
    assert (await ok(await owner.post(f"/tasks/{alone['id']}/restore")))["id"] == alone["id"]
    assert sorted(await ids(owner, "/tasks")) == sorted([went_with["id"], alone["id"]])


async def test_a_deal_cannot_come_back_before_its_contact(any_api: Api) -> None:
    owner = await any_api.register()
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact)
    task = await new_task(owner, deal["id"])
    await ok(await owner.delete(f"/tasks/{task['id']}"), 204)
    # A contact whose deals are all in the trash may be deleted.
    assert_problem(await owner.delete(f"/contacts/{contact}"), 409, "CONTACT_HAS_DEALS")
    await ok(await owner.delete(f"/deals/{deal['id']}"), 204)
    await ok(await owner.delete(f"/contacts/{contact}"), 204)

    assert_problem(await owner.post(f"/deals/{deal['id']}/restore"), 409, "CONTACT_IN_TRASH")
    assert_problem(await owner.post(f"/tasks/{task['id']}/restore"), 409, "DEAL_IN_TRASH")
    assert await total(owner, "/trash") == 3  # nothing changed
    assert_problem(await owner.get(f"/deals/{deal['id']}"), 404)

    await ok(await owner.post(f"/contacts/{contact}/restore"))
    await ok(await owner.post(f"/deals/{deal['id']}/restore"))
    await ok(await owner.post(f"/tasks/{task['id']}/restore"))
    assert await total(owner, "/trash") == 0
    assert await ids(owner, "/tasks") == [task["id"]]


async def test_restore_follows_the_delete_permissions(any_api: Api) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    theirs = await create_contact(owner)
    mine = await create_contact(member)
    await ok(await owner.delete(f"/contacts/{theirs}"), 204)
    await ok(await member.delete(f"/contacts/{mine}"), 204)

    assert_problem(await member.post(f"/contacts/{theirs}/restore"), 403, "PERMISSION_DENIED")
    assert await count_trashed(engine_of(any_api), "contacts", "id = :id", id=theirs) == 1
    await ok(await member.post(f"/contacts/{mine}/restore"))


async def test_restore_is_safe_to_retry_with_an_idempotency_key(any_api: Api) -> None:
    owner = await any_api.register()
    contact = await create_contact(owner)
    await ok(await owner.delete(f"/contacts/{contact}"), 204)
    headers = {"Idempotency-Key": "restore-once"}

    first = await owner.post(f"/contacts/{contact}/restore", headers=headers)
    again = await owner.post(f"/contacts/{contact}/restore", headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    restored_events = await count_rows(
        engine_of(any_api),
        "events",
        "type = 'contact.restored' AND organization_id = :o",
        o=owner.organization_id,
    )
    assert restored_events == 1


# --- analytics stay exact ------------------------------------------------------------------


async def fresh_figures(engine: AsyncEngine, organization_id: int) -> dict[str, Any]:
    """Summary and funnel figures computed now by a plain GROUP BY over the live deals."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT status, stage, count(*), sum(amount) FROM deals "
                    "WHERE organization_id = :o AND deleted_at IS NULL GROUP BY status, stage"
                ),
                {"o": organization_id},
            )
        ).all()
    by_status = {s: {"count": 0, "total_amount": Decimal(0)} for s in STATUSES}
    by_stage = {stage: dict.fromkeys(STATUSES, 0) for stage in STAGES}
    for status, stage, count, amount in rows:
        # SQLite stores integer cents (app.db.types.Money).
        amount = Decimal(amount) / 100 if isinstance(amount, int) else Decimal(amount)
        by_status[status]["count"] += count
        by_status[status]["total_amount"] += amount
        by_stage[stage][status] += count
    return {"by_status": by_status, "by_stage": by_stage}


async def assert_analytics_exact(user: User, engine: AsyncEngine) -> None:
    expected = await fresh_figures(engine, user.organization_id)
    summary = await ok(await user.get("/analytics/deals/summary"))
    for status in STATUSES:
        got = summary["by_status"][status]
        want = expected["by_status"][status]
        assert got["count"] == want["count"], status
        assert Decimal(str(got["total_amount"])) == want["total_amount"], status
    funnel = await ok(await user.get("/analytics/deals/funnel"))
    reached = 0
    for stage in reversed(funnel["stages"]):
        want_by_status = expected["by_stage"][stage["stage"]]
        assert stage["by_status"] == want_by_status, stage["stage"]
        assert stage["count"] == sum(want_by_status.values())
        reached += stage["count"]
        assert stage["reached"] == reached
    deals = await ok(await user.get("/deals", params={"page_size": 1}))
    assert deals["total"] == summary["total"]["count"]


async def test_analytics_equal_a_fresh_aggregate_through_trash_restore_and_purge(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    engine = engine_of(any_api)
    contacts = [await create_contact(owner, f"C{i}") for i in range(3)]
    deals = []
    for i in range(12):
        deal = await create_deal(
            owner, contacts[i % 3], f"D{i}", amount=f"{i * 10 + 1}.25", currency="EUR"
        )
        changes = {"status": STATUSES[i % 4], "stage": STAGES[(i // 2) % 4]}
        if changes["status"] == "new":
            changes.pop("status")
        await ok(await owner.patch(f"/deals/{deal['id']}", json=changes))
        deals.append(deal["id"])
    await assert_analytics_exact(owner, engine)

    for deal_id in deals[::2]:
        await ok(await owner.delete(f"/deals/{deal_id}"), 204)
    await assert_analytics_exact(owner, engine)

    for deal_id in deals[::4]:
        await ok(await owner.post(f"/deals/{deal_id}/restore"))
    await assert_analytics_exact(owner, engine)

    # A restored deal changed afterwards moves its figures as any deal does.
    await ok(await owner.patch(f"/deals/{deals[0]}", json={"status": "lost", "amount": "7"}))
    await assert_analytics_exact(owner, engine)

    purged = await purge(any_api, retention_days=0)
    assert purged.deals == len(deals[2::4])
    await assert_analytics_exact(owner, engine)

    # The running totals themselves equal the aggregate (nothing rebuilt them).
    async with engine.connect() as conn:
        stats = (
            await conn.execute(
                text(
                    "SELECT status, stage, sum(deal_count) FROM deal_stats "
                    "WHERE organization_id = :o GROUP BY status, stage "
                    "HAVING sum(deal_count) <> 0"
                ),
                {"o": owner.organization_id},
            )
        ).all()
        live = (
            await conn.execute(
                text(
                    "SELECT status, stage, count(*) FROM deals "
                    "WHERE organization_id = :o AND deleted_at IS NULL GROUP BY status, stage"
                ),
                {"o": owner.organization_id},
            )
        ).all()
    assert sorted(tuple(r) for r in stats) == sorted(tuple(r) for r in live)


# --- the purge ---------------------------------------------------------------------------


async def test_the_purge_deletes_for_good_after_retention(any_api: Api) -> None:
    owner = await any_api.register()
    engine = engine_of(any_api)
    # A contact in the trash with its deal (tasks, timeline) in the trash too.
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact)
    await new_task(owner, deal["id"])
    await comment(owner, deal["id"], "old")
    await ok(await owner.delete(f"/deals/{deal['id']}"), 204)
    await ok(await owner.delete(f"/contacts/{contact}"), 204)
    # A task in the trash on a live deal, which stays.
    live_deal = await create_deal(owner, await create_contact(owner))
    task = await new_task(owner, live_deal["id"])
    await ok(await owner.delete(f"/tasks/{task['id']}"), 204)
    assert await count_rows(engine, "activities", "deal_id = :d", d=deal["id"]) == 2
    now = utcnow()

    # Within retention: nothing goes.
    assert (await purge(any_api, retention_days=30, now=now + timedelta(days=29))).total == 0
    assert await total(owner, "/trash") == 4

    purged = await purge(any_api, retention_days=30, now=now + timedelta(days=31))

    assert (purged.contacts, purged.deals, purged.tasks) == (1, 1, 1)
    assert await count_rows(engine, "contacts", "id = :id", id=contact) == 0
    assert await count_rows(engine, "deals", "id = :id", id=deal["id"]) == 0
    assert await count_rows(engine, "tasks", "deal_id = :d", d=deal["id"]) == 0
    assert await count_rows(engine, "tasks", "id = :id", id=task["id"]) == 0
    assert await count_rows(engine, "activities", "deal_id = :d", d=deal["id"]) == 0
    assert await total(owner, "/trash") == 0
    assert_problem(await owner.post(f"/contacts/{contact}/restore"), 404)
    assert await ids(owner, "/deals") == [live_deal["id"]]
    # Purging again finds nothing; the feed kept the `*.deleted` events.
    assert (await purge(any_api, retention_days=30, now=now + timedelta(days=31))).total == 0
    assert await count_rows(engine, "events", "type = 'deal.deleted'") == 1


async def test_minicrm_prune_purges_the_trash(
    tmp_path: Path, make_api: Any, sqlite_url: str
) -> None:
    api = await make_api(sqlite_url)
    owner = await api.register()
    contact = await create_contact(owner)
    await ok(await owner.delete(f"/contacts/{contact}"), 204)

    kept = await run_cli(api, tmp_path, "prune")  # 30 days by default: nothing is due
    assert kept.returncode == 0, kept.stderr
    assert "trash_contacts_purged=0" in kept.stdout
    assert await count_rows(engine_of(api), "contacts") == 1

    result = await run_cli(api, tmp_path, "prune", TRASH_RETENTION_DAYS="0")
    assert result.returncode == 0, result.stderr
    assert "trash_contacts_purged=1" in result.stdout
    assert await count_rows(engine_of(api), "contacts") == 0


async def test_the_worker_loop_purges_the_trash(make_api: Any, database_url: str) -> None:
    api = await make_api(
        database_url,
        BACKGROUND_WORKER="on",
        WORKER_POLL_SECONDS=0.05,
        TRASH_RETENTION_DAYS=0,
        TRASH_PURGE_INTERVAL_SECONDS=0.05,
    )
    owner = await api.register()
    deal = await create_deal(owner, await create_contact(owner))
    task = await new_task(owner, deal["id"])
    await ok(await owner.delete(f"/tasks/{task['id']}"), 204)

    engine = engine_of(api)
    for _ in range(200):  # purged by the in-process background work within moments
        if await count_rows(engine, "tasks", "id = :id", id=task["id"]) == 0:
            break
        await asyncio.sleep(0.05)
    assert await count_rows(engine, "tasks", "id = :id", id=task["id"]) == 0
    assert await ids(owner, "/deals") == [deal["id"]]


# --- the list indexes stay usable (PostgreSQL plans) ------------------------------------------


async def test_list_totals_are_index_only_scans_of_the_partial_indexes(pg_api: Api) -> None:
    """A page's `total` counts live rows from the partial list index alone (`WHERE deleted_at
    IS NULL`): no heap visit to check `deleted_at`, trashed rows not even in the index."""
    owner = await pg_api.register()
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact)
    await new_task(owner, deal["id"])
    trashed_deal = await create_deal(owner, contact)
    await ok(await owner.delete(f"/deals/{trashed_deal['id']}"), 204)
    engine = engine_of(pg_api)
    cases = [
        ("/deals", "ix_deals_org_"),  # any of the partial list indexes will do
        ("/contacts", "ix_contacts_org_"),
        ("/tasks", "ix_tasks_org_due"),
    ]
    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "count(" in statement:
            captured.append((statement, parameters))

    for path, index in cases:
        captured.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            # A filter set of its own: the total is not served from the cache.
            response = await owner.get(path, params={"page_size": 7})
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
        assert f"Index Only Scan using {index}" in plan, (path, plan)
        assert "Filter" not in plan, (path, plan)
