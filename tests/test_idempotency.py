"""Idempotency-Key on POST: one run per key, the first answer replayed to retries.

Every test runs on SQLite and on PostgreSQL, except the one that needs two transactions to
run at once (SQLite runs one writer at a time: there a duplicate waits and gets the replay).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request, status
from sqlalchemy import insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import idempotency
from app.api.routing import StrictJSONRoute
from app.core.errors import DatabaseUnavailable
from app.dependencies.auth import OrgContext
from app.dependencies.db import SessionDep
from app.models import IdempotencyKey
from tests.support import Api, assert_problem, count_rows, create_contact, engine_of, run_cli

KEY = "Idempotency-Key"
REPLAYED = "idempotent-replayed"


def keyed(key: str, **headers: str) -> dict[str, Any]:
    return {"headers": {KEY: key, **headers}}


async def test_a_retry_after_a_lost_answer_gets_the_original_answer_and_creates_nothing(
    any_api: Api,
) -> None:
    user = await any_api.register()
    contact_id = await create_contact(user)
    engine = engine_of(any_api)
    deal = {"contact_id": contact_id, "title": "Website", "amount": "100.00", "currency": "EUR"}

    # The server completes the first request; the client never sees the answer.
    lost = await user.post("/deals", json=deal, **keyed("deal-1"))
    assert lost.status_code == 201
    assert REPLAYED not in lost.headers
    deals_before = await count_rows(engine, "deals")
    activities_before = await count_rows(engine, "activities")

    retry = await user.post("/deals", json=deal, **keyed("deal-1"))
    assert retry.status_code == 201
    assert retry.headers[REPLAYED] == "true"
    assert retry.headers["content-type"] == "application/json"
    assert retry.json() == lost.json()
    assert retry.content == lost.content
    assert await count_rows(engine, "deals") == deals_before == 1
    assert await count_rows(engine, "activities") == activities_before

    # The same holds for a contact and a comment (the timeline gains one entry, not two).
    first = await user.post("/contacts", json={"name": "Ann"}, **keyed("contact-1"))
    again = await user.post("/contacts", json={"name": "Ann"}, **keyed("contact-1"))
    assert again.headers[REPLAYED] == "true"
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert await count_rows(engine, "contacts") == 2
    deal_id = lost.json()["id"]
    comment = {"type": "comment", "payload": {"text": "Called"}}
    for _ in range(3):
        answer = await user.post(f"/deals/{deal_id}/activities", json=comment, **keyed("c"))
        assert answer.status_code == 201
    assert await count_rows(engine, "activities", "type = 'comment'") == 1


async def test_without_a_key_every_request_runs(any_api: Api) -> None:
    user = await any_api.register()
    for _ in range(2):
        response = await user.post("/contacts", json={"name": "Ann"})
        assert response.status_code == 201
        assert REPLAYED not in response.headers
    assert await count_rows(engine_of(any_api), "contacts") == 2


async def test_concurrent_duplicates_create_exactly_one_record(any_api: Api) -> None:
    user = await any_api.register()
    contact_id = await create_contact(user)
    engine = engine_of(any_api)

    async def burst(path: str, body: dict[str, Any], key: str) -> list[httpx.Response]:
        return list(
            await asyncio.gather(*(user.post(path, json=body, **keyed(key)) for _ in range(10)))
        )

    for path, body, table in (
        ("/deals", {"contact_id": contact_id, "title": "Once"}, "deals"),
        ("/contacts", {"name": "Once"}, "contacts"),
    ):
        before = await count_rows(engine, table)
        answers = await burst(path, body, f"burst {path}")
        created = [a for a in answers if a.status_code == 201]
        assert created, [a.text for a in answers]
        assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 409:
                assert_problem(answer, 409, "IDEMPOTENCY_KEY_IN_USE")
        assert sum(REPLAYED not in a.headers for a in created) == 1
        assert {a.content for a in created} == {created[0].content}
        assert await count_rows(engine, table) == before + 1


async def test_the_same_key_with_another_body_is_422_and_runs_nothing(any_api: Api) -> None:
    user = await any_api.register()
    first = await user.post("/contacts", json={"name": "Ann"}, **keyed("k"))
    assert first.status_code == 201
    other = await user.post("/contacts", json={"name": "Bob"}, **keyed("k"))
    assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert REPLAYED not in other.headers
    assert await count_rows(engine_of(any_api), "contacts") == 1
    # The first request's answer is still the one kept.
    again = await user.post("/contacts", json={"name": "Ann"}, **keyed("k"))
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()


async def test_the_body_is_compared_as_json_not_as_bytes(any_api: Api) -> None:
    user = await any_api.register()
    headers = {**user.headers(), KEY: "json", "Content-Type": "application/json"}
    url = any_api.url("/contacts")
    first = await any_api.client.post(
        url, content=b'{"name": "Ann", "email": null}', headers=headers
    )
    again = await any_api.client.post(
        url, content=b'{ "email":null,"name":"Ann" }', headers=headers
    )
    assert first.status_code == again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert await count_rows(engine_of(any_api), "contacts") == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_empty_or_too_long_key_is_422_and_runs_nothing(any_api: Api, key: str) -> None:
    user = await any_api.register()
    response = await user.post("/contacts", json={"name": "Ann"}, **keyed(key))
    body = assert_problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["header", "idempotency-key"]
    assert await count_rows(engine_of(any_api), "contacts") == 0
    longest = await user.post("/contacts", json={"name": "Ann"}, **keyed("k" * 255))
    assert longest.status_code == 201


async def test_a_4xx_is_kept_and_replayed(any_api: Api) -> None:
    user = await any_api.register()
    body = {"contact_id": 999_999, "title": "Nobody"}
    refused = await user.post("/deals", json=body, **keyed("bad"))
    problem = assert_problem(refused, 400, "CONTACT_NOT_FOUND")
    again = await user.post("/deals", json=body, **keyed("bad"))
    assert again.status_code == 400
    assert again.headers[REPLAYED] == "true"
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json() == problem  # the original request_id included
    assert await count_rows(engine_of(any_api), "idempotency_keys") == 1
    assert await count_rows(engine_of(any_api), "deals") == 0


async def test_a_request_refused_before_it_runs_keeps_nothing(any_api: Api) -> None:
    """Validation (422) and membership (403) refusals happen before the key is taken: fixing
    the request and retrying with the same key runs it."""
    user = await any_api.register()
    invalid = await user.post("/contacts", json={"name": ""}, **keyed("fix-me"))
    assert_problem(invalid, 422, "VALIDATION_ERROR")
    stranger = await any_api.register()
    foreign = await user.post(
        "/contacts",
        json={"name": "Ann"},
        headers={**user.headers(stranger.organization_id), KEY: "fix-me"},
    )
    assert_problem(foreign, 403, "NOT_A_MEMBER")
    assert await count_rows(engine_of(any_api), "idempotency_keys") == 0
    fixed = await user.post("/contacts", json={"name": "Ann"}, **keyed("fix-me"))
    assert fixed.status_code == 201
    assert REPLAYED not in fixed.headers


def add_flaky_route(api: Api) -> list[str]:
    """A test-only POST route: its first call fails with a 500, its second with a 503, the
    later ones succeed. Returns the list of the calls that ran."""
    router = APIRouter(route_class=StrictJSONRoute)
    runs: list[str] = []

    @router.post("/flaky", status_code=status.HTTP_201_CREATED)
    async def flaky(ctx: OrgContext) -> dict[str, int]:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("boom")
        if len(runs) == 2:
            raise DatabaseUnavailable()
        return {"run": len(runs)}

    api.app.include_router(router, prefix=api.prefix)
    return runs


async def test_a_5xx_is_not_kept_and_the_key_can_be_retried(any_api: Api) -> None:
    runs = add_flaky_route(any_api)
    user = await any_api.register()
    crashed = await user.post("/flaky", json=None, **keyed("retry-me"))
    assert_problem(crashed, 500, "INTERNAL_ERROR")
    unavailable = await user.post("/flaky", json=None, **keyed("retry-me"))
    assert_problem(unavailable, 503, "DATABASE_UNAVAILABLE")
    succeeded = await user.post("/flaky", json=None, **keyed("retry-me"))
    assert succeeded.status_code == 201
    assert succeeded.json() == {"run": 3}
    assert REPLAYED not in succeeded.headers
    replayed = await user.post("/flaky", json=None, **keyed("retry-me"))
    assert replayed.headers[REPLAYED] == "true"
    assert replayed.json() == {"run": 3}
    assert len(runs) == 3


async def test_keys_never_cross_users_organizations_or_paths(any_api: Api) -> None:
    ann = await any_api.register()
    bob = await any_api.register()
    engine = engine_of(any_api)
    same = {"name": "Shared"}
    answers = [
        await ann.post("/contacts", json=same, **keyed("shared")),
        await bob.post("/contacts", json=same, **keyed("shared")),
    ]
    # Ann, also a member of Bob's organization, with the same key there.
    added = await bob.post(
        f"/organizations/{bob.organization_id}/members", json={"email": ann.email, "role": "member"}
    )
    assert added.status_code == 201
    answers.append(
        await ann.post(
            "/contacts", json=same, headers={**ann.headers(bob.organization_id), KEY: "shared"}
        )
    )
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert all(REPLAYED not in a.headers for a in answers)
    assert len({a.json()["id"] for a in answers}) == 3
    assert await count_rows(engine, "contacts") == 3
    # The same key on another path is another key.
    contact_id = answers[0].json()["id"]
    deal = await ann.post(
        "/deals", json={"contact_id": contact_id, "title": "D"}, **keyed("shared")
    )
    assert deal.status_code == 201
    assert REPLAYED not in deal.headers


async def test_token_issuing_auth_routes_ignore_the_key(any_api: Api) -> None:
    """Register, login and refresh answer with live tokens, never kept or replayed."""
    body = {
        "email": "ann@example.com",
        "password": "StrongPassword123",
        "name": "Ann",
        "organization_name": "A",
    }
    url = any_api.url("/auth/register")
    first = await any_api.client.post(url, json=body, headers={KEY: "register"})
    assert first.status_code == 201
    again = await any_api.client.post(url, json=body, headers={KEY: "register"})
    assert_problem(again, 409, "EMAIL_TAKEN")
    assert REPLAYED not in again.headers
    login = {"email": "ann@example.com", "password": "StrongPassword123"}
    tokens = [
        (
            await any_api.client.post(any_api.url("/auth/login"), json=login, headers={KEY: "in"})
        ).json()
        for _ in range(2)
    ]
    assert tokens[0]["refresh_token"] != tokens[1]["refresh_token"]
    assert await count_rows(engine_of(any_api), "idempotency_keys") == 0


async def expire_all(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(IdempotencyKey).values(expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )


async def test_an_expired_key_runs_again(any_api: Api) -> None:
    user = await any_api.register()
    engine = engine_of(any_api)
    first = await user.post("/contacts", json={"name": "Ann"}, **keyed("old"))
    await expire_all(engine)
    later = await user.post("/contacts", json={"name": "Ann"}, **keyed("old"))
    assert later.status_code == 201
    assert REPLAYED not in later.headers
    assert later.json()["id"] != first.json()["id"]
    assert await count_rows(engine, "idempotency_keys") == 1  # the expired one replaced


async def test_expired_keys_are_pruned_while_keeping_new_ones(
    any_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await any_api.register()
    engine = engine_of(any_api)
    for index in range(3):
        assert (
            await user.post("/contacts", json={"name": "A"}, **keyed(f"k{index}"))
        ).status_code == 201
    await expire_all(engine)
    monkeypatch.setattr(idempotency, "PRUNE_EVERY", 1)
    assert (await user.post("/contacts", json={"name": "A"}, **keyed("fresh"))).status_code == 201
    assert await count_rows(engine, "idempotency_keys") == 1
    assert await count_rows(engine, "idempotency_keys", "key = 'fresh'") == 1


async def test_minicrm_prune_deletes_expired_keys(any_api: Api, tmp_path: Path) -> None:
    user = await any_api.register()
    engine = engine_of(any_api)
    for key in ("a", "b"):
        assert (await user.post("/contacts", json={"name": "A"}, **keyed(key))).status_code == 201
    await expire_all(engine)
    assert (await user.post("/contacts", json={"name": "A"}, **keyed("live"))).status_code == 201
    result = await run_cli(any_api, tmp_path, "prune")
    assert result.returncode == 0, result.stderr
    assert "idempotency_keys_deleted=2" in result.stdout
    assert await count_rows(engine, "idempotency_keys") == 1


@pytest.mark.postgres
async def test_a_key_still_running_is_409_and_its_answer_is_replayed_after(pg_api: Api) -> None:
    """The first request is held inside its transaction (a second connection locks the
    organization row its contact write moves); a duplicate meanwhile is 409 at once."""
    user = await pg_api.register()
    engine = engine_of(pg_api)
    async with engine.connect() as blocker:
        await blocker.execute(
            text("SELECT id FROM organizations WHERE id = :id FOR UPDATE"),
            {"id": user.organization_id},
        )
        first = asyncio.create_task(user.post("/contacts", json={"name": "Ann"}, **keyed("slow")))
        await wait_for_a_lock_wait(engine)
        duplicate = await user.post("/contacts", json={"name": "Ann"}, **keyed("slow"))
        assert_problem(duplicate, 409, "IDEMPOTENCY_KEY_IN_USE")
        assert not first.done()
        other_body = await user.post("/contacts", json={"name": "Bob"}, **keyed("slow"))
        assert_problem(other_body, 409, "IDEMPOTENCY_KEY_IN_USE")
        await blocker.rollback()
    answer = await first
    assert answer.status_code == 201
    replay = await user.post("/contacts", json={"name": "Ann"}, **keyed("slow"))
    assert replay.headers[REPLAYED] == "true"
    assert replay.json() == answer.json()
    assert await count_rows(engine, "contacts") == 1


async def wait_for_a_lock_wait(engine: AsyncEngine) -> None:
    database = engine.url.database
    for _ in range(500):
        async with engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :db AND wait_event_type = 'Lock'"
                ),
                {"db": database},
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first request never waited for the lock")


async def test_openapi_documents_the_header_on_post_operations_only(any_api: Api) -> None:
    spec = (await any_api.client.get(any_api.url("/openapi.json"))).json()

    def header_names(path: str, method: str) -> list[str]:
        operation = spec["paths"][f"{any_api.prefix}{path}"][method]
        return [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]

    for path in ("/deals", "/contacts", "/tasks", "/deals/{deal_id}/activities", "/organizations"):
        assert header_names(path, "post").count(KEY) == 1, path
    assert KEY not in header_names("/deals", "get")
    for path in ("/auth/register", "/auth/login", "/auth/refresh", "/auth/logout"):
        assert KEY not in header_names(path, "post"), path
    parameter = next(
        p
        for p in spec["paths"][f"{any_api.prefix}/deals"]["post"]["parameters"]
        if p["name"] == KEY
    )
    assert parameter["schema"]["maxLength"] == 255
    assert parameter["required"] is False


async def test_browsers_may_read_the_replayed_header(
    make_api: Callable[..., Awaitable[Api]], sqlite_url: str
) -> None:
    api = await make_api(sqlite_url, CORS_ORIGINS=["https://app.example.com"])
    user = await api.register()
    headers = {KEY: "cors", "Origin": "https://app.example.com"}
    await user.post("/contacts", json={"name": "Ann"}, headers=headers)
    replay = await user.post("/contacts", json={"name": "Ann"}, headers=headers)
    assert replay.headers[REPLAYED] == "true"
    exposed = replay.headers["access-control-expose-headers"].lower()
    assert REPLAYED in exposed


@pytest.mark.postgres
async def test_a_run_that_slipped_past_a_just_committed_key_is_undone_and_replays(
    pg_api: Api,
) -> None:
    """The key is taken and looked up in one statement, whose snapshot predates the lock: a
    request with the key that commits in between is not seen. The late run's answer then
    collides with the kept one, and its writes are rolled back."""
    engine = engine_of(pg_api)
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/racing", status_code=status.HTTP_201_CREATED)
    async def racing(ctx: OrgContext, session: SessionDep, request: Request) -> dict[str, bool]:
        await session.execute(
            text("UPDATE organizations SET name = 'ran twice' WHERE id = :id"),
            {"id": ctx.organization_id},
        )
        now = datetime.now(UTC)
        async with engine.begin() as conn:  # the other request commits its answer now
            await conn.execute(
                insert(IdempotencyKey).values(
                    credential=f"user:{ctx.user_id}",
                    organization_id=ctx.organization_id,
                    method="POST",
                    path=request.url.path,
                    key=request.headers[KEY],
                    request_hash=await idempotency.request_hash_of(request),
                    status_code=201,
                    content_type="application/json",
                    body=b'{"first":true}',
                    created_at=now,
                    expires_at=now + timedelta(hours=1),
                )
            )
        return {"first": False}

    pg_api.app.include_router(router, prefix=pg_api.prefix)
    user = await pg_api.register(organization_name="Acme")
    answer = await user.post("/racing", json=None, **keyed("race"))
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"first": True}
    assert answer.headers[REPLAYED] == "true"
    assert await count_rows(engine, "organizations", "name = 'ran twice'") == 0
    assert await count_rows(engine, "idempotency_keys") == 1
