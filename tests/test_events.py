"""Events and the change feed (`GET /events`), on SQLite and on PostgreSQL.

- every write route appends exactly its documented event, with the actor, the resource as its
  GET answers it and, on updates, each changed field's `[old, new]`;
- a refused (4xx) or rolled-back write appends nothing; a PATCH that changes nothing neither;
- the feed shows only the caller's organization; another organization's cursor is refused;
- `types` filters by exact type and `resource.*`; `limit` is 1..1000;
- a consumer following `next_cursor` sees every event once and in commit order: while 8
  writers write, and (PostgreSQL) when a transaction that began first commits last;
- pruning deletes old events; a cursor from before them answers 410 `CURSOR_EXPIRED`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.tenancy import TenantContext
from app.models import Activity, ActivityType, Contact, Event, Role, Task
from app.schemas.contact import ContactCreate
from app.schemas.event import EventRead
from app.schemas.task import TaskUpdate
from app.services import events
from app.services.contacts import ContactService
from app.services.tasks import TaskService
from tests.support import (
    Api,
    User,
    assert_problem,
    count_rows,
    create_contact,
    create_deal,
    engine_of,
    run_cli,
    sessions_of,
)


class Consumer:
    """Follows one organization's feed the way a client should: always from `next_cursor`."""

    def __init__(self, user: User, types: str | None = None, limit: int = 100) -> None:
        self.user = user
        self.types = types
        self.limit = limit
        self.cursor: str | None = None
        self.seen: list[dict[str, Any]] = []

    async def read(self) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": self.limit}
        if self.cursor is not None:
            params["after"] = self.cursor
        if self.types is not None:
            params["types"] = self.types
        response = await self.user.get("/events", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["next_cursor"], str)
        self.cursor = body["next_cursor"]
        self.seen.extend(body["items"])
        items: list[dict[str, Any]] = body["items"]
        return items

    async def drain(self) -> list[dict[str, Any]]:
        """Every event after the cursor, read until a page comes back short."""
        got: list[dict[str, Any]] = []
        while True:
            page = await self.read()
            got.extend(page)
            if len(page) < self.limit:
                return got

    async def skip_to_end(self) -> None:
        await self.drain()
        self.seen.clear()


def types_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["type"] for item in items]


def assert_event(
    item: dict[str, Any],
    type_: str,
    actor: User,
    obj: dict[str, Any],
    changes: dict[str, list[Any]] | None = None,
) -> None:
    EventRead.model_validate(item)  # the documented shape
    assert item["type"] == type_
    assert item["organization_id"] == actor.organization_id
    assert item["actor"] == {"type": "user", "id": actor.id}
    assert item["data"]["object"] == obj
    assert item["data"].get("changes") == changes
    occurred = datetime.fromisoformat(item["occurred_at"])
    assert abs(datetime.now(UTC) - occurred) < timedelta(minutes=5)


async def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if status != 204 else None


# --- every write route ------------------------------------------------------------------------


async def test_every_write_route_appends_its_event(any_api: Api) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    feed = Consumer(owner)
    await feed.skip_to_end()

    contact = await ok(await owner.post("/contacts", json={"name": "Ann"}), 201)
    [created] = await feed.drain()
    assert_event(created, "contact.created", owner, contact)

    renamed = await ok(await owner.patch(f"/contacts/{contact['id']}", json={"name": "Anna"}))
    [updated] = await feed.drain()
    assert_event(updated, "contact.updated", owner, renamed, {"name": ["Ann", "Anna"]})

    deal = await ok(
        await member.post("/deals", json={"contact_id": contact["id"], "title": "D"}), 201
    )
    [deal_created] = await feed.drain()
    assert_event(deal_created, "deal.created", member, deal)

    won = await ok(
        await owner.patch(
            f"/deals/{deal['id']}",
            json={"amount": 120.5, "status": "won", "stage": "closed", "title": "D"},
        )
    )
    [deal_updated] = await feed.drain()
    assert_event(
        deal_updated,
        "deal.updated",
        owner,
        await ok(await owner.get(f"/deals/{deal['id']}")),
        {
            "amount": [0.0, 120.5],
            "status": ["new", "won"],
            "stage": ["qualification", "closed"],
        },
    )
    assert deal_updated["data"]["object"] == won

    task = await ok(await member.post("/tasks", json={"deal_id": deal["id"], "title": "T"}), 201)
    [task_created] = await feed.drain()
    assert_event(task_created, "task.created", member, task)
    done = await ok(await member.patch(f"/tasks/{task['id']}", json={"is_done": True}))
    [task_updated] = await feed.drain()
    assert_event(task_updated, "task.updated", member, done, {"is_done": [False, True]})

    comment = await ok(
        await member.post(
            f"/deals/{deal['id']}/activities",
            json={"type": "comment", "payload": {"text": "hello"}},
        ),
        201,
    )
    [commented] = await feed.drain()
    assert_event(commented, "comment.created", member, comment)

    await ok(await member.delete(f"/tasks/{task['id']}"), 204)
    [task_deleted] = await feed.drain()
    assert_event(task_deleted, "task.deleted", member, done)

    # A deal's tasks go with it, each with its event, before the deal's own.
    other_task = await ok(
        await owner.post("/tasks", json={"deal_id": deal["id"], "title": "U"}), 201
    )
    await feed.drain()
    deal_now = await ok(await owner.get(f"/deals/{deal['id']}"))
    await ok(await owner.delete(f"/deals/{deal['id']}"), 204)
    cascade = await feed.drain()
    assert types_of(cascade) == ["task.deleted", "deal.deleted"]
    assert_event(cascade[0], "task.deleted", owner, other_task)
    assert_event(cascade[1], "deal.deleted", owner, deal_now)

    contact_now = await ok(await owner.get(f"/contacts/{contact['id']}"))
    await ok(await owner.delete(f"/contacts/{contact['id']}"), 204)
    [contact_deleted] = await feed.drain()
    assert_event(contact_deleted, "contact.deleted", owner, contact_now)

    # Restores, each with the object as its GET answers it afterwards: the contact; the deal
    # with the task deleted with it (the deal first); the task deleted on its own.
    restored_contact = await ok(await owner.post(f"/contacts/{contact['id']}/restore"))
    [contact_restored] = await feed.drain()
    assert_event(contact_restored, "contact.restored", owner, restored_contact)
    assert restored_contact == await ok(await owner.get(f"/contacts/{contact['id']}"))
    restored_deal = await ok(await owner.post(f"/deals/{deal['id']}/restore"))
    back = await feed.drain()
    assert types_of(back) == ["deal.restored", "task.restored"]
    assert_event(back[0], "deal.restored", owner, restored_deal)
    assert restored_deal == await ok(await owner.get(f"/deals/{deal['id']}"))
    other_task_now = await ok(await owner.get(f"/tasks/{other_task['id']}"))
    assert_event(back[1], "task.restored", owner, other_task_now)
    restored_task = await ok(await member.post(f"/tasks/{task['id']}/restore"))
    [task_restored] = await feed.drain()
    assert_event(task_restored, "task.restored", member, restored_task)
    assert restored_task == await ok(await owner.get(f"/tasks/{task['id']}"))

    # A merge: each moved deal is updated, the target's filled fields too, each source deleted.
    target = await ok(await owner.post("/contacts", json={"name": "Target"}), 201)
    source = await ok(
        await owner.post("/contacts", json={"name": "Source", "phone": "+1 415 555 0134"}), 201
    )
    moved = await ok(
        await member.post("/deals", json={"contact_id": source["id"], "title": "M"}), 201
    )
    await feed.drain()
    merged = await ok(
        await owner.post(f"/contacts/{target['id']}/merge", json={"source_ids": [source["id"]]})
    )
    merging = await feed.drain()
    assert types_of(merging) == ["deal.updated", "contact.updated", "contact.deleted"]
    assert_event(
        merging[0],
        "deal.updated",
        owner,
        await ok(await owner.get(f"/deals/{moved['id']}")),
        {"contact_id": [source["id"], target["id"]]},
    )
    assert_event(
        merging[1], "contact.updated", owner, merged["contact"], {"phone": [None, source["phone"]]}
    )
    assert_event(merging[2], "contact.deleted", owner, source)

    # Members: added, role changed, removed (by an admin), and leaving (by themself).
    newcomer = await any_api.register()
    added = await ok(
        await owner.post(
            f"/organizations/{owner.organization_id}/members",
            json={"email": newcomer.email, "role": "member"},
        ),
        201,
    )
    [member_added] = await feed.drain()
    assert_event(member_added, "member.added", owner, added)
    promoted = await ok(
        await owner.patch(
            f"/organizations/{owner.organization_id}/members/{newcomer.id}",
            json={"role": "manager"},
        )
    )
    [member_updated] = await feed.drain()
    assert_event(member_updated, "member.updated", owner, promoted, {"role": ["member", "manager"]})
    await ok(
        await owner.delete(f"/organizations/{owner.organization_id}/members/{newcomer.id}"), 204
    )
    [member_removed] = await feed.drain()
    assert_event(member_removed, "member.removed", owner, promoted)

    members = await ok(await owner.get(f"/organizations/{owner.organization_id}/members"))
    [member_row] = [m for m in members if m["user_id"] == member.id]
    await ok(
        await member.delete(f"/organizations/{owner.organization_id}/members/{member.id}"), 204
    )
    [left] = await feed.drain()
    assert_event(left, "member.removed", member, member_row)

    ids = [item["id"] for item in feed.seen]
    assert ids == sorted(set(ids))
    assert await count_rows(
        engine_of(any_api), "events", "organization_id = :o", o=owner.organization_id
    ) == (
        len(feed.seen) + 2  # the owner's and the first member's `member.added`
    )


async def test_imported_rows_append_the_events_of_the_same_writes(any_api: Api) -> None:
    """`POST /imports` itself changes no contact or deal (no event); the rows the worker
    writes append exactly what `POST /contacts` and `POST /deals` would, with the importer
    as actor, in the transaction of their batch."""
    from app.jobs.imports import ImportRunner

    owner = await any_api.register()
    manager = await any_api.member_of(owner, "manager")
    feed = Consumer(owner)
    await feed.skip_to_end()
    created: list[dict[str, Any]] = []
    for kind, content in (
        ("contacts", b"name,email\nAnn,ann@example.com\n"),
        ("deals", b"title,contact_email,amount,status\nD,ann@example.com,5,won\n"),
    ):
        response = await manager.post(
            "/imports", files={"file": ("f.csv", content, "text/csv")}, data={"kind": kind}
        )
        assert response.status_code == 202, response.text
        assert await feed.drain() == []
        worker = ImportRunner(sessions_of(any_api), any_api.app.state.settings, name="w")
        while await worker.run_once():
            pass
        created.extend(await feed.drain())
    contact = await ok(await owner.get("/contacts/" + str(created[0]["data"]["object"]["id"])))
    deal = await ok(await owner.get("/deals/" + str(created[1]["data"]["object"]["id"])))
    assert_event(created[0], "contact.created", manager, contact)
    assert_event(created[1], "deal.created", manager, deal)
    assert (deal["status"], deal["amount"], deal["owner_id"]) == ("won", 5.0, manager.id)


async def test_registering_and_creating_an_organization_add_its_owner(any_api: Api) -> None:
    owner = await any_api.register()
    [founded] = await Consumer(owner).drain()
    me = await ok(await owner.get(f"/organizations/{owner.organization_id}/members"))
    assert_event(founded, "member.added", owner, me[0])
    assert me[0]["role"] == "owner"

    org = await ok(await owner.post("/organizations", json={"name": "Second"}), 201)
    response = await owner.get("/events", headers={"X-Organization-Id": str(org["id"])})
    items = (await ok(response))["items"]
    assert types_of(items) == ["member.added"]
    assert items[0]["organization_id"] == org["id"]
    assert items[0]["data"]["object"]["user_id"] == owner.id


# --- nothing without a committed change -------------------------------------------------------


async def test_refused_writes_append_nothing(any_api: Api) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    stranger = await any_api.register()
    contact_id = await create_contact(owner)
    deal = await create_deal(owner, contact_id)
    foreign_contact = await create_contact(stranger)
    # In the trash: a deal (its contact then too) of the owner's, a contact of the stranger's.
    trashed_contact = await create_contact(owner)
    trashed_deal = await create_deal(owner, trashed_contact)
    await ok(await owner.delete(f"/deals/{trashed_deal['id']}"), 204)
    await ok(await owner.delete(f"/contacts/{trashed_contact}"), 204)
    await ok(await stranger.delete(f"/contacts/{foreign_contact}"), 204)
    feed = Consumer(owner)
    await feed.skip_to_end()
    stranger_feed = Consumer(stranger)
    await stranger_feed.skip_to_end()

    refused = [
        (await member.patch(f"/deals/{deal['id']}", json={"title": "x"}), 403),
        (await owner.patch(f"/deals/{deal['id']}", json={"status": "won"}), 400),
        (await owner.patch(f"/contacts/{foreign_contact}", json={"name": "x"}), 404),
        (await owner.delete(f"/contacts/{foreign_contact}"), 404),
        (await owner.delete(f"/contacts/{contact_id}"), 409),
        (await owner.post(f"/contacts/{foreign_contact}/restore"), 404),
        (await owner.post(f"/contacts/{contact_id}/restore"), 404),  # not in the trash
        (await owner.post(f"/deals/{trashed_deal['id']}/restore"), 409),  # CONTACT_IN_TRASH
        (await member.post(f"/contacts/{trashed_contact}/restore"), 403),
        (
            await owner.post(f"/contacts/{contact_id}/merge", json={"source_ids": [contact_id]}),
            400,
        ),
        (
            await owner.post(
                f"/contacts/{contact_id}/merge", json={"source_ids": [foreign_contact]}
            ),
            404,
        ),
        (await owner.post("/deals", json={"contact_id": foreign_contact, "title": "x"}), 400),
        (await owner.post("/contacts", json={"name": ""}), 422),
        (
            await owner.patch(
                f"/deals/{deal['id']}", json={"title": "x"}, headers={"If-Match": '"stale"'}
            ),
            412,
        ),
        (
            await owner.post(
                "/tasks", json={"deal_id": deal["id"], "title": "t", "due_date": "2000-01-01"}
            ),
            400,
        ),
        (
            await owner.post(
                f"/organizations/{owner.organization_id}/members",
                json={"email": member.email, "role": "member"},
            ),
            409,
        ),
    ]
    for response, status in refused:
        assert_problem(response, status)
    assert await feed.drain() == []
    assert await stranger_feed.drain() == []


async def test_a_rolled_back_change_leaves_no_event_and_a_committed_one_always_has_it(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    ctx = TenantContext(owner.id, owner.organization_id, Role.OWNER)
    cache = any_api.app.state.resources.cache
    engine = engine_of(any_api)
    before = await count_rows(engine, "events")
    async with sessions_of(any_api)() as session:
        await ContactService(session, ctx, cache).create(ContactCreate(name="Gone"))
        assert events.has_pending(session)
        await session.rollback()
        assert not events.has_pending(session)
        # The session goes on: a later commit in it writes only its own events.
        await ContactService(session, ctx, cache).create(ContactCreate(name="Kept"))
        await session.commit()
    assert await count_rows(engine, "events") == before + 1
    assert await count_rows(engine, "contacts", "name = 'Gone'") == 0
    [kept] = (await Consumer(owner).drain())[-1:]
    assert kept["type"] == "contact.created"
    assert kept["data"]["object"]["name"] == "Kept"

    # A commit that fails (here: a row that breaks a foreign key, flushed by the commit)
    # takes the events of its transaction with it.
    async with sessions_of(any_api)() as session:
        await ContactService(session, ctx, cache).create(ContactCreate(name="Doomed"))
        session.add(
            Contact(
                organization_id=owner.organization_id,
                owner_id=10**12,
                name="x",
                search_text="x",
            )
        )
        with pytest.raises(IntegrityError):
            await session.commit()
    assert await count_rows(engine, "contacts", "name = 'Doomed'") == 0
    assert await count_rows(engine, "events") == before + 1


async def test_a_change_without_its_event_is_refused_at_commit(any_api: Api) -> None:
    """The guard: a write path that forgets `events.record` fails its first test, rather
    than committing changes a consumer never hears of. Bulk history says `backfill`."""
    owner = await any_api.register()
    engine = engine_of(any_api)
    deal = await create_deal(owner, await create_contact(owner))
    task = await ok(await owner.post("/tasks", json={"deal_id": deal["id"], "title": "T"}), 201)
    before = await count_rows(engine, "events")
    async with sessions_of(any_api)() as session:
        await session.execute(update(Task).where(Task.id == task["id"]).values(title="Quiet"))
        with pytest.raises(events.EventNotRecorded, match="task"):
            await session.commit()
        await session.rollback()
    async with sessions_of(any_api)() as session:
        session.add(
            Activity(
                organization_id=owner.organization_id,
                deal_id=deal["id"],
                author_id=owner.id,
                type=ActivityType.COMMENT,
                payload={"text": "quiet"},
            )
        )
        await session.flush()
        with pytest.raises(events.EventNotRecorded, match="comment"):
            await session.commit()
        await session.rollback()
    assert await count_rows(engine, "tasks", "title = 'Quiet'") == 0
    assert await count_rows(engine, "activities", "type = 'comment'") == 0
    assert await count_rows(engine, "events") == before
    async with sessions_of(any_api)() as session:
        events.backfill(session)
        await session.execute(update(Task).where(Task.id == task["id"]).values(title="Loaded"))
        await session.commit()
    assert await count_rows(engine, "tasks", "title = 'Loaded'") == 1
    assert await count_rows(engine, "events") == before


async def test_a_patch_that_changes_nothing_appends_nothing(any_api: Api) -> None:
    owner = await any_api.register()
    admin = await any_api.member_of(owner, "admin")
    contact = await ok(await owner.post("/contacts", json={"name": "Ann", "phone": "1"}), 201)
    deal = await create_deal(owner, contact["id"], title="D")
    task = await ok(await owner.post("/tasks", json={"deal_id": deal["id"], "title": "T"}), 201)
    feed = Consumer(owner)
    await feed.skip_to_end()

    await ok(await owner.patch(f"/contacts/{contact['id']}", json={"name": "Ann", "phone": "1"}))
    await ok(await owner.patch(f"/deals/{deal['id']}", json={"title": "D", "status": "new"}))
    await ok(await owner.patch(f"/tasks/{task['id']}", json={"title": "T", "is_done": False}))
    await ok(await owner.patch(f"/contacts/{contact['id']}", json={}))
    await ok(
        await owner.patch(
            f"/organizations/{owner.organization_id}/members/{admin.id}", json={"role": "admin"}
        )
    )
    assert await feed.drain() == []


# --- the feed ---------------------------------------------------------------------------------


async def test_the_feed_shows_only_the_callers_organization(any_api: Api) -> None:
    alice = await any_api.register()
    bob = await any_api.register()
    await create_contact(alice, "Alice's")
    bob_contact = await create_contact(bob, "Bob's")
    # Alice, writing to Bob's contact by id, finds nothing: no event anywhere.
    assert_problem(await alice.patch(f"/contacts/{bob_contact}", json={"name": "x"}), 404)

    alice_feed = await Consumer(alice).drain()
    bob_feed = await Consumer(bob).drain()
    assert {item["organization_id"] for item in alice_feed} == {alice.organization_id}
    assert {item["organization_id"] for item in bob_feed} == {bob.organization_id}
    assert types_of(alice_feed) == ["member.added", "contact.created"]
    assert types_of(bob_feed) == ["member.added", "contact.created"]
    assert bob_feed[1]["data"]["object"]["name"] == "Bob's"

    # A cursor is a position in one organization's feed: another's is refused, not read.
    bob_cursor = (await ok(await bob.get("/events")))["next_cursor"]
    assert_problem(await alice.get("/events", params={"after": bob_cursor}), 422, "INVALID_CURSOR")
    assert_problem(await alice.get("/events", params={"after": "abc.def"}), 422, "INVALID_CURSOR")
    # Bob's organization is not Alice's to read.
    assert_problem(
        await alice.get("/events", headers={"X-Organization-Id": str(bob.organization_id)}),
        403,
        "NOT_A_MEMBER",
    )
    assert_problem(await any_api.client.get(any_api.url("/events")), 401)


async def test_types_filter_by_exact_type_and_resource_pattern(any_api: Api) -> None:
    owner = await any_api.register()
    contact_id = await create_contact(owner)
    deal = await create_deal(owner, contact_id)
    await ok(await owner.patch(f"/deals/{deal['id']}", json={"title": "E"}))
    task = await ok(await owner.post("/tasks", json={"deal_id": deal["id"], "title": "T"}), 201)
    await ok(await owner.patch(f"/tasks/{task['id']}", json={"is_done": True}))

    filtered = Consumer(owner, types="deal.*, task.created")
    assert types_of(await filtered.drain()) == ["deal.created", "deal.updated", "task.created"]
    assert types_of(await Consumer(owner, types="*").drain()) == [
        "member.added",
        "contact.created",
        "deal.created",
        "deal.updated",
        "task.created",
        "task.updated",
    ]
    assert types_of(await Consumer(owner, types="task.updated").drain()) == ["task.updated"]

    # At the end, the filtered cursor waits past the events it left out: only newer ones come.
    await create_contact(owner)
    await ok(await owner.patch(f"/deals/{deal['id']}", json={"title": "F"}))
    assert types_of(await filtered.drain()) == ["deal.updated"]

    for bad in ("deal", "deal.", "deals.*", "deal.won", "*.created", ",", "deal.**", "a" * 60):
        body = assert_problem(await owner.get("/events", params={"types": bad}), 422)
        assert body["errors"][0]["loc"] == ["query", "types"], body


async def test_limit_is_1_to_1000_and_paging_sees_every_event_once(any_api: Api) -> None:
    owner = await any_api.register()
    for index in range(7):
        await create_contact(owner, f"C{index}")
    for bad in (0, 1001, -1):
        assert_problem(await owner.get("/events", params={"limit": bad}), 422)
    everything = await Consumer(owner, limit=1000).drain()
    assert len(everything) == 8
    assert len((await ok(await owner.get("/events")))["items"]) == 8  # default 100

    by_two = Consumer(owner, limit=2)
    pages = [await by_two.read() for _ in range(5)]
    assert [len(page) for page in pages] == [2, 2, 2, 2, 0]
    assert [item["id"] for page in pages for item in page] == [e["id"] for e in everything]
    # At the end the cursor stays where it is: polling with it returns only newer events.
    assert await by_two.read() == []
    await create_contact(owner, "Later")
    [later] = await by_two.read()
    assert later["data"]["object"]["name"] == "Later"


async def test_an_empty_feed_answers_a_cursor_that_sees_the_first_event(any_api: Api) -> None:
    owner = await any_api.register()
    engine = engine_of(any_api)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM events"))
    empty = await ok(await owner.get("/events"))
    assert empty["items"] == []
    await create_contact(owner)
    after = await ok(await owner.get("/events", params={"after": empty["next_cursor"]}))
    assert types_of(after["items"]) == ["contact.created"]


# --- commit order -----------------------------------------------------------------------------


async def test_a_consumer_reading_while_8_writers_write_sees_every_event_once(
    any_api: Api,
) -> None:
    """Task writes, which take no organization-wide lock of their own: on PostgreSQL the 8
    writers' transactions really overlap."""
    owner = await any_api.register()
    writers = [owner] + [await any_api.member_of(owner, "manager") for _ in range(7)]
    contact_id = await create_contact(owner)
    deals = [(await create_deal(owner, contact_id))["id"] for _ in writers]
    feed = Consumer(owner, limit=5)
    await feed.skip_to_end()
    per_writer = 5

    async def write(user: User, deal_id: int) -> list[int]:
        made = []
        for index in range(per_writer):
            task = await ok(
                await user.post("/tasks", json={"deal_id": deal_id, "title": f"t{index}"}), 201
            )
            await ok(await user.patch(f"/tasks/{task['id']}", json={"is_done": True}))
            made.append(task["id"])
        return made

    writing = [asyncio.ensure_future(write(u, d)) for u, d in zip(writers, deals, strict=True)]
    while not all(task.done() for task in writing):
        await feed.read()
        await asyncio.sleep(0)
    made = sorted(task_id for task in writing for task_id in task.result())
    await feed.drain()

    ids = [item["id"] for item in feed.seen]
    assert len(ids) == len(set(ids)) == 2 * len(made)
    assert ids == sorted(ids)
    created = [i["data"]["object"]["id"] for i in feed.seen if i["type"] == "task.created"]
    updated = [i["data"]["object"]["id"] for i in feed.seen if i["type"] == "task.updated"]
    assert sorted(created) == made == sorted(updated)
    seen_created: set[int] = set()
    for item in feed.seen:  # each task's update after its creation
        task_id = item["data"]["object"]["id"]
        if item["type"] == "task.created":
            seen_created.add(task_id)
        else:
            assert task_id in seen_created


async def tasks_on_deals(owner: User, count: int) -> list[int]:
    contact_id = await create_contact(owner)
    made = []
    for index in range(count):
        deal = await create_deal(owner, contact_id, title=f"d{index}")
        task = await ok(await owner.post("/tasks", json={"deal_id": deal["id"], "title": "t"}), 201)
        made.append(task["id"])
    return made


@pytest.mark.postgres
async def test_a_transaction_that_commits_last_is_read_last_even_if_it_began_first(
    pg_api: Api,
) -> None:
    """A writes first but commits last; B commits meanwhile and is read; then A, holding the
    organization's event lock with its event written, keeps C waiting while a reader finds
    nothing new; A commits, then C. The consumer sees B, A, C: commit order, each once.

    Tasks on different deals: their writes take no organization-wide lock of their own
    (contact and deal writes already queue on the organization's counters)."""
    owner = await pg_api.register()
    ctx = TenantContext(owner.id, owner.organization_id, Role.OWNER)
    engine = engine_of(pg_api)
    tasks = await tasks_on_deals(owner, 3)
    feed = Consumer(owner)
    await feed.skip_to_end()
    sessions = sessions_of(pg_api)

    async def rename(session: AsyncSession, task_id: int, title: str) -> None:
        await TaskService(session, ctx).update(task_id, TaskUpdate(title=title))

    async with sessions() as first:
        await rename(first, tasks[0], "A")  # A's change is made; its event is pending

        async with sessions() as second:
            await rename(second, tasks[1], "B")
            await second.commit()
        assert [i["data"]["object"]["title"] for i in await feed.drain()] == ["B"]

        # A's commit, up to its end: its event written, then numbered under the organization's
        # lock (the deferred trigger COMMIT would run, run now), the lock held.
        await first.run_sync(events.write_pending)
        await first.execute(text("SET CONSTRAINTS events_number_at_commit IMMEDIATE"))

        async def third() -> None:
            async with sessions() as session:
                await rename(session, tasks[2], "C")
                await session.commit()

        waiting = asyncio.ensure_future(third())
        try:
            await wait_for_advisory_waiters(engine, 1)
            assert await feed.drain() == []  # A not committed, C waiting: nothing to read yet
            assert not waiting.done()
        finally:
            await first.commit()
    await waiting
    await feed.drain()
    assert [i["data"]["object"]["title"] for i in feed.seen] == ["B", "A", "C"]
    ids = [item["id"] for item in feed.seen]
    assert ids == sorted(set(ids))


@pytest.mark.postgres
async def test_concurrent_writers_of_one_organization_commit_events_in_id_order(
    pg_api: Api,
) -> None:
    """Many overlapping transactions: in every snapshot a reader takes, the organization's
    visible events are a prefix of their final id order (never a later-visible lower id)."""
    owner = await pg_api.register()
    ctx = TenantContext(owner.id, owner.organization_id, Role.OWNER)
    engine = engine_of(pg_api)
    sessions = sessions_of(pg_api)
    tasks = await tasks_on_deals(owner, 6)
    snapshots: list[list[int]] = []

    async def writer(index: int) -> None:
        async with sessions() as session:
            await TaskService(session, ctx).update(
                tasks[index % len(tasks)], TaskUpdate(title=f"n{index}")
            )
            await asyncio.sleep(0)
            await session.commit()

    async def event_ids() -> list[int]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id FROM events WHERE organization_id = :o ORDER BY id"),
                {"o": owner.organization_id},
            )
            return [row.id for row in rows]

    async def reader(done: asyncio.Event) -> None:
        while not done.is_set():
            snapshots.append(await event_ids())
            await asyncio.sleep(0)

    done = asyncio.Event()
    reading = asyncio.ensure_future(reader(done))
    await asyncio.gather(*(writer(i) for i in range(24)))
    done.set()
    await reading
    final = await event_ids()
    assert len(snapshots) > 1
    for seen in snapshots:
        assert seen == final[: len(seen)]


@pytest.mark.postgres
async def test_only_the_apps_placeholder_ids_are_numbered_at_commit(pg_api: Api) -> None:
    """The app inserts events with a negative placeholder id, numbered at commit; a row
    inserted with its id (a restored dump, a bulk load) keeps the id it came with."""
    owner = await pg_api.register()
    engine = engine_of(pg_api)
    restored_id = 2**40 + owner.organization_id
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO events (id, organization_id, type, occurred_at, actor_type, "
                "actor_id, data) VALUES (:id, :o, 'contact.created', now(), 'user', :u, '{}')"
            ),
            {"id": restored_id, "o": owner.organization_id, "u": owner.id},
        )
    await ok(await owner.post("/contacts", json={"name": "Numbered at commit"}), 201)
    async with engine.connect() as conn:
        ids = (
            await conn.scalars(
                text("SELECT id FROM events WHERE organization_id = :o ORDER BY id"),
                {"o": owner.organization_id},
            )
        ).all()
    assert restored_id in ids
    assert all(i > 0 for i in ids)
    assert len(ids) == len(set(ids))


async def wait_for_advisory_waiters(engine: AsyncEngine, count: int) -> None:
    """Until `count` sessions wait for an advisory lock (PostgreSQL tells, no guessing)."""
    for _ in range(500):
        async with engine.connect() as conn:
            waiting = await conn.scalar(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            )
        if waiting == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no transaction waited for the organization's event lock")


# --- retention --------------------------------------------------------------------------------


async def age_events(engine: AsyncEngine, organization_id: int, ids: list[int], days: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(Event)
            .where(Event.organization_id == organization_id, Event.id.in_(ids))
            .values(occurred_at=datetime.now(UTC) - timedelta(days=days))
        )


async def test_pruned_events_make_an_older_cursor_410(any_api: Api) -> None:
    owner = await any_api.register()
    other = await any_api.register()
    start = (await ok(await owner.get("/events")))["next_cursor"]  # after member.added
    old = [await create_contact(owner, f"old{i}") for i in range(3)]
    middle = Consumer(owner)
    await middle.drain()  # a consumer that has read everything so far
    await create_contact(owner, "new")
    all_events = await Consumer(owner).drain()
    old_ids = [e["id"] for e in all_events if e["type"] == "member.added"] + [
        e["id"] for e in all_events if e["data"]["object"].get("id") in old
    ]
    engine = engine_of(any_api)
    await age_events(engine, owner.organization_id, old_ids, days=31)
    untouched = await count_rows(engine, "events", "organization_id = :o", o=other.organization_id)

    async with sessions_of(any_api)() as session:
        deleted = await events.prune(session, retention_days=30)
        await session.commit()
    assert deleted == len(old_ids) == 4
    assert (
        await count_rows(engine, "events", "organization_id = :o", o=other.organization_id)
        == untouched
    )

    expired = await owner.get("/events", params={"after": start})
    assert_problem(expired, 410, "CURSOR_EXPIRED")
    # From the oldest retained: only the new one.
    assert [e["data"]["object"]["name"] for e in await Consumer(owner).drain()] == ["new"]
    # A consumer that had read past the pruned events goes on.
    assert [e["data"]["object"]["name"] for e in await middle.drain()] == ["new"]
    # Another organization's feed is untouched by this one's prune mark.
    assert len(await Consumer(other).drain()) == 1


async def test_a_feed_pruned_empty_answers_a_cursor_that_stays_valid(any_api: Api) -> None:
    owner = await any_api.register()
    await create_contact(owner)
    engine = engine_of(any_api)
    ids = [e["id"] for e in await Consumer(owner).drain()]
    await age_events(engine, owner.organization_id, ids, days=60)
    async with sessions_of(any_api)() as session:
        assert await events.prune(session, retention_days=30) == len(ids) == 2
        await session.commit()
    feed = Consumer(owner)
    assert await feed.drain() == []
    assert await feed.read() == []  # the cursor it was given is not before the prune mark
    await create_contact(owner, "After")
    assert [e["data"]["object"]["name"] for e in await feed.read()] == ["After"]


async def test_minicrm_prune_deletes_old_events(
    tmp_path: Path, make_api: Any, sqlite_url: str
) -> None:
    api = await make_api(sqlite_url)
    owner = await api.register()
    await create_contact(owner)
    ids = [e["id"] for e in await Consumer(owner).drain()]
    engine = engine_of(api)
    await age_events(engine, owner.organization_id, ids[:1], days=40)
    result = await run_cli(api, tmp_path, "prune", EVENTS_RETENTION_DAYS="30")
    assert result.returncode == 0, result.stderr
    assert "events_deleted=1" in result.stdout
    assert [e["id"] for e in await Consumer(owner).drain()] == ids[1:]


# --- pieces -----------------------------------------------------------------------------------


def test_type_filter_reads_exact_types_and_patterns() -> None:
    assert events.type_filter(None) == events.type_filter("*")
    both = events.type_filter("deal.*,task.created,deal.updated")
    assert both.prefixes == frozenset({"deal"})
    assert both.exact == frozenset({"task.created"})
    with pytest.raises(ValueError, match="unknown event type"):
        events.type_filter("deal.won")
