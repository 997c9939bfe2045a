"""What keeps a busy worker fast: the connection pool, garbage collection, verified tokens, and
the one-statement deal read.

- The PostgreSQL pool has no overflow by default: a request finding every connection in use
  waits for one. Overflow connections are closed as soon as they are returned, so a load
  hovering above the pool size used to open and close a connection (a new server process)
  for a good share of its requests.
- Startup objects are frozen out of garbage collection, once per process, and young
  collections run less often.
- An access token verified once is remembered with its expiry: a later use still fails once
  it has expired, and a token is remembered only after it passed verification.
- `GET /deals/{id}` checks membership and reads the deal in one statement.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from app.core.errors import InvalidToken
from app.core.security import TokenCodec, TokenType
from tests.conftest import AppFactory, make_settings
from tests.support import (
    PASSWORD,
    Api,
    assert_problem,
    create_contact,
    create_deal,
    statements_sent,
)


async def test_requests_beyond_the_pool_size_wait_instead_of_opening_connections(
    make_api: AppFactory, pg_url: str
) -> None:
    api = await make_api(pg_url, DB_POOL_SIZE=2)
    owner = await api.register()
    deal = await create_deal(owner, await create_contact(owner))
    engine = api.app.state.resources.engine
    opened: list[object] = []

    def count(*_: Any) -> None:
        opened.append(object())

    event.listen(engine.sync_engine, "connect", count)
    try:
        responses = await asyncio.gather(
            *(owner.get(f"/deals/{deal['id']}") for _ in range(24)),
            *(owner.patch(f"/deals/{deal['id']}", json={"title": f"T{i}"}) for i in range(8)),
        )
    finally:
        event.remove(engine.sync_engine, "connect", count)

    assert {r.status_code for r in responses} == {200}
    assert len(opened) <= 2  # at most the pool's own two; no overflow connection


async def test_a_request_that_gets_no_connection_in_time_is_503(
    make_api: AppFactory, pg_url: str
) -> None:
    api = await make_api(pg_url, DB_POOL_SIZE=1, DB_POOL_TIMEOUT_SECONDS=0.2)
    owner = await api.register()
    deal = await create_deal(owner, await create_contact(owner))
    engine = api.app.state.resources.engine

    async with engine.connect() as held:
        await held.execute(text("SELECT 1"))
        response = await owner.get(f"/deals/{deal['id']}")
        assert_problem(response, 503, "DATABASE_BUSY")
        assert response.headers["retry-after"] == "1"
        rejected = await owner.patch(f"/deals/{deal['id']}", json={"title": "Later"})
        assert_problem(rejected, 503, "DATABASE_BUSY")

    assert (await owner.get(f"/deals/{deal['id']}")).json()["title"] == deal["title"]


async def test_login_holds_no_connection_while_it_hashes(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await api.register()
    resources = api.app.state.resources
    verify = resources.passwords.verify
    checked_out: list[int] = []

    async def observed(password: str, password_hash: str | None) -> bool:
        checked_out.append(resources.engine.pool.checkedout())
        return bool(await verify(password, password_hash))

    monkeypatch.setattr(resources.passwords, "verify", observed)
    statuses = []
    for password in ("wrong password!", PASSWORD):
        response = await api.client.post(
            api.url("/auth/login"), json={"email": owner.email, "password": password}
        )
        statuses.append(response.status_code)
    assert statuses == [401, 200]
    assert checked_out == [0, 0]


def test_startup_objects_are_frozen_out_of_garbage_collection(api: Api) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == 10_000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def codec(clock: Clock) -> TokenCodec:
    return TokenCodec(make_settings("sqlite+aiosqlite://"), clock=clock)


def test_a_remembered_token_still_expires() -> None:
    clock = Clock(time.time())
    tokens = codec(clock)
    issued = tokens.issue(7, 1, TokenType.ACCESS)
    assert tokens.decode(issued.token, TokenType.ACCESS).user_id == 7
    assert tokens.decode(issued.token, TokenType.ACCESS).user_id == 7  # remembered

    lifetime = tokens.lifetime(TokenType.ACCESS)
    clock.now += (lifetime + timedelta(seconds=4)).total_seconds()  # within the 5 s leeway
    assert tokens.decode(issued.token, TokenType.ACCESS).user_id == 7
    clock.now += 2
    with pytest.raises(InvalidToken):
        tokens.decode(issued.token, TokenType.ACCESS)


def test_a_remembered_token_keeps_its_type() -> None:
    tokens = codec(Clock(time.time()))
    access = tokens.issue(7, 1, TokenType.ACCESS).token
    refresh = tokens.issue(7, 1, TokenType.REFRESH).token
    assert tokens.decode(access, TokenType.ACCESS).user_id == 7
    assert tokens.decode(refresh, TokenType.REFRESH).user_id == 7
    for token, wrong in ((access, TokenType.REFRESH), (refresh, TokenType.ACCESS)):
        with pytest.raises(InvalidToken):
            tokens.decode(token, wrong)
    assert list(tokens._verified) == [access]  # a refresh token is used once: not kept


def test_only_verified_tokens_are_remembered_and_only_so_many() -> None:
    tokens = codec(Clock(time.time()))
    tokens.VERIFIED_TOKENS = 3
    genuine = tokens.issue(7, 1, TokenType.ACCESS).token
    head, payload, signature = genuine.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    for _ in range(2):
        with pytest.raises(InvalidToken):
            tokens.decode(forged, TokenType.ACCESS)
    issued = [tokens.issue(user_id, 1, TokenType.ACCESS).token for user_id in range(1, 6)]
    for user_id, token in enumerate(issued, start=1):
        assert tokens.decode(token, TokenType.ACCESS).user_id == user_id
    remembered = tokens._verified  # the bound is the point of this test
    assert list(remembered) == issued[-3:]
    assert forged not in remembered
    assert tokens.decode(issued[0], TokenType.ACCESS).user_id == 1  # verified again


async def test_reading_a_deal_is_one_statement(api: Api) -> None:
    owner = await api.register()
    outsider = await api.register()
    deal = await create_deal(owner, await create_contact(owner))
    engine = api.app.state.resources.engine

    def is_query(sql: str) -> bool:
        return sql.lstrip().upper().startswith("SELECT")

    with statements_sent(engine) as sent:
        response = await owner.get(f"/deals/{deal['id']}")
    assert response.status_code == 200
    assert response.json() == deal
    assert len([s for s in sent if is_query(s.sql)]) == 1
    if engine.dialect.name == "postgresql":  # no transaction
        assert [s.isolation_level for s in sent] == ["AUTOCOMMIT"]
    else:  # a deferred transaction, without the write lock
        assert [s.sql for s in sent if not is_query(s.sql)] == ["BEGIN"]

    with statements_sent(engine, is_query) as sent:
        missing = await owner.get(f"/deals/{deal['id'] + 1000}")
        stranger = await outsider.get(
            f"/deals/{deal['id']}", headers=outsider.headers(owner.organization_id)
        )
    assert_problem(missing, 404, "DEAL_NOT_FOUND")
    assert_problem(stranger, 403, "NOT_A_MEMBER")
    assert len(sent) == 2
