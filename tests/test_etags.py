"""ETag, If-None-Match and If-Match on single contacts, deals and tasks (RFC 9110).

The ETag is strong and names one state of the record: it changes with every real change, not
with a PATCH that changes nothing. `If-None-Match` turns a GET into a 304; a PATCH or DELETE
whose `If-Match` no longer matches is 412 `PRECONDITION_FAILED` and changes nothing, checked
against the row locked for the write: of two writers holding the same ETag, one wins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from app.core.versioning import version_of
from tests.support import (
    Api,
    User,
    assert_problem,
    count_rows,
    create_contact,
    create_deal,
    engine_of,
    snapshot,
)

RESOURCES = ("contacts", "deals", "tasks")


@dataclass(frozen=True)
class Resource:
    path: str
    current: dict[str, Any]  # the representation after creation
    change: dict[str, Any]  # a PATCH body that really changes it
    other_change: dict[str, Any]  # another one


async def make(user: User, kind: str) -> Resource:
    contact_id = await create_contact(user)
    if kind == "contacts":
        body = (await user.get(f"/contacts/{contact_id}")).json()
        return Resource(f"/contacts/{contact_id}", body, {"name": "Renamed"}, {"phone": "+1 555"})
    deal = await create_deal(user, contact_id, amount="100")
    if kind == "deals":
        return Resource(f"/deals/{deal['id']}", deal, {"title": "Renamed"}, {"amount": "7.50"})
    response = await user.post("/tasks", json={"deal_id": deal["id"], "title": "Call"})
    assert response.status_code == 201, response.text
    task = response.json()
    return Resource(f"/tasks/{task['id']}", task, {"title": "Renamed"}, {"is_done": True})


async def etag_of(user: User, path: str) -> str:
    response = await user.get(path)
    assert response.status_code == 200, response.text
    etag: str = response.headers["etag"]
    return etag


@pytest.mark.parametrize("kind", RESOURCES)
async def test_get_answers_a_strong_etag_and_304_when_it_still_matches(
    owner: User, kind: str
) -> None:
    resource = await make(owner, kind)
    response = await owner.get(resource.path)
    etag = response.headers["etag"]
    body = response.json()
    assert etag == f'"{version_of(body["id"], datetime.fromisoformat(body["updated_at"]))}"'

    for if_none_match in (etag, "*", f'"nope", {etag}', f"W/{etag}", f'"a",\t"b" , {etag},'):
        again = await owner.get(resource.path, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert "content-type" not in again.headers

    for if_none_match in ('"nope"', 'W/"nope"', '"a", "b"'):
        again = await owner.get(resource.path, headers={"If-None-Match": if_none_match})
        assert again.status_code == 200, if_none_match
        assert again.json() == response.json()
        assert again.headers["etag"] == etag


@pytest.mark.parametrize("kind", RESOURCES)
async def test_etag_changes_with_every_real_change_and_not_with_a_no_op(
    owner: User, kind: str
) -> None:
    resource = await make(owner, kind)
    first = await etag_of(owner, resource.path)

    unchanged = await owner.patch(
        resource.path,
        json={"title": resource.current.get("title")}
        if kind != "contacts"
        else {"name": resource.current["name"]},
    )
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.headers["etag"] == first
    assert await etag_of(owner, resource.path) == first

    changed = await owner.patch(resource.path, json=resource.change)
    assert changed.status_code == 200, changed.text
    second = changed.headers["etag"]
    assert second != first
    assert await etag_of(owner, resource.path) == second  # PATCH's ETag is GET's

    changed = await owner.patch(resource.path, json=resource.other_change)
    third = changed.headers["etag"]
    assert third not in (first, second)
    assert await etag_of(owner, resource.path) == third
    # The old ETag no longer gives a 304.
    assert (await owner.get(resource.path, headers={"If-None-Match": first})).status_code == 200


@pytest.mark.parametrize("kind", RESOURCES)
async def test_patch_with_a_stale_if_match_is_412_and_changes_nothing(
    api: Api, owner: User, kind: str
) -> None:
    resource = await make(owner, kind)
    stale = await etag_of(owner, resource.path)
    fresh = (await owner.patch(resource.path, json=resource.change)).headers["etag"]

    before = await snapshot(engine_of(api))
    for if_match in (stale, f'"nope", {stale}', f"W/{fresh}"):  # weak never matches If-Match
        refused = await owner.patch(
            resource.path, json=resource.other_change, headers={"If-Match": if_match}
        )
        assert_problem(refused, 412, "PRECONDITION_FAILED")
    assert await snapshot(engine_of(api)) == before
    assert await etag_of(owner, resource.path) == fresh

    for if_match in ("{}", '"nope", {}', "*"):
        accepted = await owner.patch(
            resource.path, json=resource.other_change, headers={"If-Match": if_match.format(fresh)}
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == (await owner.get(resource.path)).json()
        fresh = accepted.headers["etag"]


@pytest.mark.parametrize("kind", RESOURCES)
async def test_delete_with_a_stale_if_match_is_412_and_deletes_nothing(
    api: Api, owner: User, kind: str
) -> None:
    resource = await make(owner, kind)
    stale = await etag_of(owner, resource.path)
    fresh = (await owner.patch(resource.path, json=resource.change)).headers["etag"]

    before = await snapshot(engine_of(api))
    refused = await owner.delete(resource.path, headers={"If-Match": stale})
    assert_problem(refused, 412, "PRECONDITION_FAILED")
    assert await snapshot(engine_of(api)) == before

    if kind == "contacts":
        deleted = await owner.delete(resource.path, headers={"If-Match": fresh})
    else:
        deleted = await owner.delete(resource.path, headers={"If-Match": "*"})
    assert deleted.status_code == 204, deleted.text
    assert (await owner.get(resource.path)).status_code == 404
    # Gone: 404 whatever If-Match says (`*` only matches a record that exists).
    gone = await owner.delete(resource.path, headers={"If-Match": "*"})
    assert gone.status_code == 404


@pytest.mark.parametrize("kind", RESOURCES)
async def test_another_organizations_record_is_404_before_any_412(
    api: Api, owner: User, kind: str
) -> None:
    resource = await make(owner, kind)
    etag = await etag_of(owner, resource.path)
    stranger = await api.register(organization_name="Other")
    before = await snapshot(engine_of(api))
    for if_match in ('"stale"', etag, "*"):
        patched = await stranger.patch(
            resource.path, json=resource.change, headers={"If-Match": if_match}
        )
        assert patched.status_code == 404, patched.text
        deleted = await stranger.delete(resource.path, headers={"If-Match": if_match})
        assert deleted.status_code == 404, deleted.text
        read = await stranger.get(resource.path, headers={"If-None-Match": etag})
        assert read.status_code == 404
        assert "etag" not in read.headers
    assert await snapshot(engine_of(api)) == before


@pytest.mark.parametrize(
    "value", ["abc", '"unterminated', "W/abc", '"a" "b"', '*, "a"', ",", 'w/"a"', '"a"x']
)
async def test_malformed_conditional_headers_are_422(owner: User, value: str) -> None:
    resource = await make(owner, "deals")
    before = await etag_of(owner, resource.path)
    patched = await owner.patch(resource.path, json=resource.change, headers={"If-Match": value})
    body = assert_problem(patched, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["header", "If-Match"]
    deleted = await owner.delete(resource.path, headers={"If-Match": value})
    assert_problem(deleted, 422, "VALIDATION_ERROR")
    read = await owner.get(resource.path, headers={"If-None-Match": value})
    body = assert_problem(read, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["header", "If-None-Match"]
    assert await etag_of(owner, resource.path) == before


async def test_if_match_is_documented_with_412(api: Api) -> None:
    document = api.app.openapi()
    for path, key in (("contacts", "contact_id"), ("deals", "deal_id"), ("tasks", "task_id")):
        operations = document["paths"][f"{api.prefix}/{path}/{{{key}}}"]
        for method in ("patch", "delete"):
            names = [p["name"] for p in operations[method]["parameters"]]
            assert "If-Match" in names, (path, method)
            assert "412" in operations[method]["responses"], (path, method)


# --- two writers with the same ETag ---------------------------------------------------------


TABLES = {"contacts": "contacts", "deals": "deals", "tasks": "tasks"}


async def race(
    api: Api, user: User, kind: str, send: Callable[[User, str, dict[str, str]], Awaitable[Any]]
) -> tuple[Resource, list[int]]:
    """Two writers with the same ETag, made to overlap for certain: the test holds the row
    locked while both requests start, and lets go once both wait on the database (at their
    locking read, or at their write when they do not lock first)."""
    resource = await make(user, kind)
    etag = await etag_of(user, resource.path)
    record_id = int(resource.path.rsplit("/", 1)[1])
    engine = engine_of(api)
    async with engine.connect() as holder:
        await holder.execute(
            text(f"SELECT id FROM {TABLES[kind]} WHERE id = :id FOR UPDATE"),  # noqa: S608
            {"id": record_id},
        )
        writers = [
            asyncio.create_task(send(user, resource.path, {"If-Match": etag})) for _ in range(2)
        ]
        await both_waiting(engine, writers)
        await holder.rollback()
    responses = await asyncio.gather(*writers)
    return resource, sorted(r.status_code for r in responses)


async def both_waiting(engine: Any, writers: list[asyncio.Task[Any]]) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    for _ in range(500):
        async with engine.connect() as conn:
            if (await conn.execute(query)).scalar_one() >= 2:
                return
        assert not any(w.done() for w in writers), [w.result() for w in writers if w.done()]
        await asyncio.sleep(0.01)
    raise AssertionError("the two writers never both waited for the row")


@pytest.mark.postgres
@pytest.mark.parametrize("kind", RESOURCES)
async def test_two_patches_with_the_same_etag_one_wins_on_postgresql(
    pg_api: Api, kind: str
) -> None:
    user = await pg_api.register()
    bodies = iter(
        [{"status": "won", "title": "First"}, {"status": "lost", "title": "Second"}]
        if kind == "deals"
        else [{"name": "First"}, {"name": "Second"}]
        if kind == "contacts"
        else [{"title": "First"}, {"title": "Second"}]
    )

    async def send(user: User, path: str, headers: dict[str, str]) -> Any:
        return await user.patch(path, json=next(bodies), headers=headers)

    resource, statuses = await race(pg_api, user, kind, send)
    assert statuses == [200, 412]
    if kind == "deals":
        timeline = await count_rows(
            engine_of(pg_api), "activities", "deal_id = :deal_id", deal_id=resource.current["id"]
        )
        assert timeline == 1


@pytest.mark.postgres
@pytest.mark.parametrize("kind", RESOURCES)
async def test_two_deletes_with_the_same_etag_one_deletes_on_postgresql(
    pg_api: Api, kind: str
) -> None:
    user = await pg_api.register()

    async def send(user: User, path: str, headers: dict[str, str]) -> Any:
        return await user.delete(path, headers=headers)

    _, statuses = await race(pg_api, user, kind, send)
    assert statuses == [204, 404]


async def test_two_patches_with_the_same_etag_one_wins_on_sqlite(api: Api, owner: User) -> None:
    """SQLite serialises writers (BEGIN IMMEDIATE): the second sees the first's result."""
    resource = await make(owner, "deals")
    etag = await etag_of(owner, resource.path)
    responses = await asyncio.gather(
        *(
            owner.patch(resource.path, json={"status": status}, headers={"If-Match": etag})
            for status in ("won", "lost")
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 412]
    timeline = await count_rows(
        engine_of(api), "activities", "deal_id = :deal_id", deal_id=resource.current["id"]
    )
    assert timeline == 1


async def test_role_is_checked_before_the_precondition_and_the_precondition_before_rules(
    team: Any,
) -> None:
    resource = await make(team.owner, "deals")
    stale = await etag_of(team.owner, resource.path)
    await team.owner.patch(resource.path, json=resource.change)
    # A member may not change the owner's deal at all: 403, whatever If-Match says.
    refused = await team.member.patch(
        resource.path, json={"title": "Mine"}, headers={"If-Match": stale}
    )
    assert_problem(refused, 403)
    # A stale If-Match is 412 even for a change a rule would refuse (won needs amount > 0).
    refused = await team.owner.patch(
        resource.path, json={"amount": "0", "status": "won"}, headers={"If-Match": stale}
    )
    assert_problem(refused, 412, "PRECONDITION_FAILED")
