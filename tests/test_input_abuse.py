"""Hostile input: every malformed request gets a clear 4xx problem+json and writes nothing.

NUL bytes and lone surrogates in every string field, megabyte strings, absurd pagination,
deeply nested and non-JSON bodies, wrong content types, non-finite and over-precise amounts,
impossible dates, out-of-range ids (path, query, header, body), non-object bodies, duplicate
keys and oversized bodies. Each case compares a snapshot of every table before and after.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Base, Deal
from tests.support import PASSWORD, Api, User, assert_problem, snapshot

BODY_LIMIT = 1024 * 1024  # MAX_REQUEST_BODY_BYTES default
MAX_ID = 2**63 - 1
BAD_IDS = ["0", "-1", str(2**63), str(10**30), "abc", "1.5", "1e3", ""]
SENTINEL = "\x01SENTINEL\x01"


@dataclass
class Setup:
    api: Api
    engine: AsyncEngine
    owner: User
    member: User
    stranger: User
    contact_id: int
    deal_id: int
    task_id: int
    spare_refresh_tokens: list[str] = field(default_factory=list)

    @property
    def org_id(self) -> int:
        return self.owner.organization_id


@pytest.fixture
async def s(make_api: Callable[..., Awaitable[Api]], database_url: str) -> Setup:
    api = await make_api(database_url)
    owner = await api.register(organization_name="Acme")
    member = await api.member_of(owner, "member")
    stranger = await api.register(organization_name="Elsewhere")
    contact = await owner.post("/contacts", json={"name": "Ann", "email": "ann@example.com"})
    assert contact.status_code == 201, contact.text
    deal = await owner.post(
        "/deals", json={"contact_id": contact.json()["id"], "title": "Deal", "amount": "10"}
    )
    assert deal.status_code == 201, deal.text
    task = await owner.post("/tasks", json={"deal_id": deal.json()["id"], "title": "Call"})
    assert task.status_code == 201, task.text
    setup = Setup(
        api=api,
        engine=api.app.state.resources.engine,
        owner=owner,
        member=member,
        stranger=stranger,
        contact_id=contact.json()["id"],
        deal_id=deal.json()["id"],
        task_id=task.json()["id"],
    )
    for _ in range(2):
        login = await api.client.post(
            api.url("/auth/login"), json={"email": owner.email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        setup.spare_refresh_tokens.append(login.json()["refresh_token"])
    return setup


async def send(
    s: Setup,
    method: str,
    path: str,
    content: bytes | AsyncIterator[bytes] | None = None,
    *,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> httpx.Response:
    all_headers = s.owner.headers() if auth else {}
    if content_type is not None and content is not None:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    return await s.api.client.request(method, s.api.url(path), content=content, headers=all_headers)


async def row_counts(engine: AsyncEngine) -> tuple[int, ...]:
    """The row count of every table, in one cheap statement."""
    tables = [table.name for table in Base.metadata.sorted_tables]
    counts = ", ".join(f"(SELECT count(*) FROM {name})" for name in tables)  # noqa: S608
    async with engine.connect() as conn:
        return tuple((await conn.execute(text(f"SELECT {counts}"))).one())


@asynccontextmanager
async def nothing_written(s: Setup) -> AsyncIterator[None]:
    """Around a batch of refused requests: every row of every table is as it was."""
    before = await snapshot(s.engine)
    yield
    assert await snapshot(s.engine) == before, "a refused request changed the database"


async def expect_refused(
    s: Setup, request: Awaitable[httpx.Response], *statuses: int, code: str | None = None
) -> dict[str, Any]:
    """The request is refused with one of `statuses` as problem+json and adds/removes no row
    (the full snapshot around each test, `nothing_written`, catches any other change)."""
    before = await row_counts(s.engine)
    response = await request
    assert response.status_code in statuses, f"{response.status_code}: {response.text[:500]}"
    problem = assert_problem(response, response.status_code, code)
    assert len(response.content) < 20_000, "the problem echoes the (huge) input"
    assert await row_counts(s.engine) == before, "a refused request added or removed rows"
    return problem


# --- every string field of every create/update body ---------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: dict[str, Any]
    fields: tuple[tuple[str, ...], ...]  # key paths of the string fields
    auth: bool = True

    def with_value(self, key_path: tuple[str, ...], value: Any) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(self.body))
        node = body
        for key in key_path[:-1]:
            node = node[key]
        node[key_path[-1]] = value
        return body

    def raw_with(self, key_path: tuple[str, ...], json_string_literal: bytes) -> bytes:
        """The body with one field replaced by a raw JSON string literal (e.g. b'"\\ud800"')."""
        encoded = json.dumps(self.with_value(key_path, SENTINEL)).encode()
        sentinel = json.dumps(SENTINEL).encode()
        assert encoded.count(sentinel) == 1
        return encoded.replace(sentinel, json_string_literal)


def endpoints(s: Setup) -> list[Endpoint]:
    org = f"/organizations/{s.org_id}"
    return [
        Endpoint(
            "POST",
            "/auth/register",
            {
                "email": "fresh@example.com",
                "password": PASSWORD,
                "name": "Fresh",
                "organization_name": "Fresh org",
            },
            (("email",), ("password",), ("name",), ("organization_name",)),
            auth=False,
        ),
        Endpoint(
            "POST",
            "/auth/login",
            {"email": s.owner.email, "password": PASSWORD},
            (("email",), ("password",)),
            auth=False,
        ),
        Endpoint(
            "POST",
            "/auth/refresh",
            {"refresh_token": s.spare_refresh_tokens[0]},
            (("refresh_token",),),
            auth=False,
        ),
        Endpoint(
            "POST",
            "/auth/logout",
            {"refresh_token": s.spare_refresh_tokens[1]},
            (("refresh_token",),),
            auth=False,
        ),
        Endpoint("POST", "/organizations", {"name": "Second"}, (("name",),)),
        Endpoint("PATCH", org, {"name": "Renamed"}, (("name",),)),
        Endpoint(
            "POST",
            f"{org}/members",
            {"email": s.stranger.email, "role": "member"},
            (("email",), ("role",)),
        ),
        Endpoint("PATCH", f"{org}/members/{s.member.id}", {"role": "manager"}, (("role",),)),
        Endpoint(
            "POST",
            "/contacts",
            {"name": "Bob", "email": "bob@example.com", "phone": "+1 555 0100"},
            (("name",), ("email",), ("phone",)),
        ),
        Endpoint(
            "PATCH",
            f"/contacts/{s.contact_id}",
            {"name": "Ann B.", "email": "annb@example.com", "phone": "+1 555 0101"},
            (("name",), ("email",), ("phone",)),
        ),
        Endpoint(
            "POST",
            "/deals",
            {"contact_id": s.contact_id, "title": "New deal", "amount": "5", "currency": "EUR"},
            (("title",), ("amount",), ("currency",)),
        ),
        Endpoint(
            "PATCH",
            f"/deals/{s.deal_id}",
            {
                "title": "Renamed",
                "amount": "20",
                "currency": "GBP",
                "status": "in_progress",
                "stage": "proposal",
            },
            (("title",), ("amount",), ("currency",), ("status",), ("stage",)),
        ),
        Endpoint(
            "POST",
            "/tasks",
            {"deal_id": s.deal_id, "title": "Email", "description": "Send it", "due_date": None},
            (("title",), ("description",), ("due_date",)),
        ),
        Endpoint(
            "PATCH",
            f"/tasks/{s.task_id}",
            {"title": "Call again", "description": "Later", "due_date": None},
            (("title",), ("description",), ("due_date",)),
        ),
        Endpoint(
            "POST",
            f"/deals/{s.deal_id}/activities",
            {"type": "comment", "payload": {"text": "Hello"}},
            (("type",), ("payload", "text")),
        ),
    ]


def fields_of(s: Setup) -> list[tuple[str, Endpoint, tuple[str, ...]]]:
    return [
        (f"{e.method} {e.path} {'.'.join(path)}", e, path)
        for e in endpoints(s)
        for path in e.fields
    ]


async def test_the_base_bodies_are_accepted(s: Setup) -> None:
    """Guards the tests below: each refusal is caused by the abuse, not by a bad base body."""
    for endpoint in endpoints(s):
        response = await send(
            s,
            endpoint.method,
            endpoint.path,
            json.dumps(endpoint.body).encode(),
            auth=endpoint.auth,
        )
        assert response.status_code in (200, 201, 204), (endpoint.path, response.text)


NOT_TEXT = {
    "NUL": b'"a\\u0000b"',
    "only NUL": b'"\\u0000"',
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"x\\udfffy"',
    "reversed surrogate pair": b'"\\udc00\\ud800"',
}


async def test_nul_and_lone_surrogates_in_every_string_field_are_422(
    s: Setup, subtests: pytest.Subtests
) -> None:
    async with nothing_written(s):
        for label, endpoint, key_path in fields_of(s):
            for what, literal in NOT_TEXT.items():
                with subtests.test(f"{label} <- {what}"):
                    body = endpoint.raw_with(key_path, literal)
                    request = send(s, endpoint.method, endpoint.path, body, auth=endpoint.auth)
                    problem = await expect_refused(s, request, 422, code="VALIDATION_ERROR")
                    assert problem["errors"], problem


async def test_nul_and_lone_surrogates_in_search_are_refused(
    s: Setup, subtests: pytest.Subtests
) -> None:
    """A query string is bytes: NUL is %00, a lone surrogate can only arrive as its (invalid)
    UTF-8-style encoding %ED%A0%80. Neither is text; both must be refused, not searched for."""
    async with nothing_written(s):
        for path in ("/contacts", "/deals"):
            for encoded in ("%00", "a%00b", "%ED%A0%80", "x%ED%BF%BFy", "%ED%A0%80%ED%B0%80"):
                with subtests.test(f"{path}?search={encoded}"):
                    request = send(s, "GET", f"{path}?search={encoded}")
                    await expect_refused(s, request, 400, 422)


async def test_megabyte_strings_are_422_and_larger_bodies_413(
    s: Setup, subtests: pytest.Subtests
) -> None:
    async with nothing_written(s):
        megabyte = "a" * 1_000_000  # the body stays under the 1 MiB limit
        for label, endpoint, key_path in fields_of(s):
            with subtests.test(f"{label} <- 1 MB"):
                body = json.dumps(endpoint.with_value(key_path, megabyte)).encode()
                assert len(body) < BODY_LIMIT
                request = send(s, endpoint.method, endpoint.path, body, auth=endpoint.auth)
                await expect_refused(s, request, 422, code="VALIDATION_ERROR")
        over = "a" * BODY_LIMIT
        for endpoint in endpoints(s):
            with subtests.test(f"{endpoint.method} {endpoint.path} <- over 1 MiB"):
                body = json.dumps(endpoint.with_value(endpoint.fields[0], over)).encode()
                request = send(s, endpoint.method, endpoint.path, body, auth=endpoint.auth)
                await expect_refused(s, request, 413, code="PAYLOAD_TOO_LARGE")
        for path in ("/contacts", "/deals"):
            with subtests.test(f"{path}?search=<10 000 characters>"):
                await expect_refused(s, send(s, "GET", f"{path}?search={'a' * 10_000}"), 422)


# --- pagination ---------------------------------------------------------------------------


async def test_absurd_pagination_is_422(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        lists = ("/contacts", "/deals", "/tasks", f"/deals/{s.deal_id}/activities")
        bad = [
            ("page", str(10**12)),
            ("page", "-1"),
            ("page", "0"),
            ("page", "1.5"),
            ("page", "abc"),
            ("page", str(2**64)),
            ("page_size", "0"),
            ("page_size", "-5"),
            ("page_size", "101"),
            ("page_size", str(10**9)),
            ("page_size", str(10**30)),
        ]
        for path in lists:
            for name, value in bad:
                with subtests.test(f"{path}?{name}={value}"):
                    problem = await expect_refused(
                        s, send(s, "GET", f"{path}?{name}={value}"), 422, code="VALIDATION_ERROR"
                    )
                    assert problem["errors"][0]["loc"] == ["query", name]
            with subtests.test(f"{path} far page"):
                response = await s.owner.get(path, params={"page": 10_000_000, "page_size": 100})
                assert response.status_code == 200, response.text
                assert response.json()["items"] == []
                assert response.json()["page"] == 10_000_000


# --- malformed bodies ---------------------------------------------------------------------


def bodies(s: Setup) -> list[tuple[str, str]]:
    return [
        ("POST", "/contacts"),
        ("PATCH", f"/contacts/{s.contact_id}"),
        ("POST", "/deals"),
        ("PATCH", f"/deals/{s.deal_id}"),
        ("POST", "/tasks"),
        ("PATCH", f"/tasks/{s.task_id}"),
        ("POST", f"/deals/{s.deal_id}/activities"),
        ("POST", "/organizations"),
        ("PATCH", f"/organizations/{s.org_id}"),
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
    ]


DEPTH = 10_000


async def test_deeply_nested_json_is_refused(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        nested_lists = b"[" * DEPTH + b"]" * DEPTH
        nested_objects = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
        for method, path in bodies(s):
            for what, body in {
                "lists as the body": nested_lists,
                "objects as the body": nested_objects,
                "lists in a field": b'{"name": ' + nested_lists + b', "title": "x"}',
            }.items():
                with subtests.test(f"{method} {path} <- {what}"):
                    await expect_refused(s, send(s, method, path, body), 400, 422)
        with subtests.test("comment payload nested"):
            body = b'{"type": "comment", "payload": {"text": ' + nested_objects + b"}}"
            request = send(s, "POST", f"/deals/{s.deal_id}/activities", body)
            await expect_refused(s, request, 400, 422)


NOT_JSON = {
    "words": b"not json",
    "truncated": b'{"name": "x"',
    "single quotes": b"{'name': 'x'}",
    "trailing garbage": b'{"name": "x"} trailing',
    "two documents": b'{"name": "x"}{"name": "y"}',
    "trailing comma": b'{"name": "x",}',
    "empty": b"",
    "whitespace": b"   ",
    "NUL byte": b"\x00",
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "unterminated escape": b'{"name": "\\u12"}',
}


async def test_non_json_bodies_are_refused(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        for method, path in bodies(s):
            for what, body in NOT_JSON.items():
                with subtests.test(f"{method} {path} <- {what}"):
                    await expect_refused(s, send(s, method, path, body), 400, 422)


async def test_wrong_content_types_are_refused(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        json_body = b'{"name": "Bob", "title": "x", "email": "bob@example.com"}'
        variants = {
            "text/plain": ("text/plain", json_body),
            "form": ("application/x-www-form-urlencoded", b"name=Bob&title=x"),
            "form with JSON": ("application/x-www-form-urlencoded", json_body),
            "multipart": (
                "multipart/form-data; boundary=XyZ",
                b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nBob\r\n--XyZ--\r\n',
            ),
            "xml": ("application/xml", b"<name>Bob</name>"),
            "octet-stream": ("application/octet-stream", json_body),
        }
        for method, path in bodies(s):
            for what, (content_type, body) in variants.items():
                with subtests.test(f"{method} {path} as {what}"):
                    request = send(s, method, path, body, content_type=content_type)
                    await expect_refused(s, request, 415, 422)


async def test_bodies_that_are_not_objects_are_422(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        for method, path in bodies(s):
            for body in (b"[]", b'[{"name": "Bob"}]', b'"Bob"', b"42", b"null", b"true"):
                with subtests.test(f"{method} {path} <- {body!r}"):
                    request = send(s, method, path, body)
                    await expect_refused(s, request, 422, code="VALIDATION_ERROR")


async def test_duplicate_json_keys_are_refused(s: Setup, subtests: pytest.Subtests) -> None:
    """Parsers disagree on which duplicate wins (first, last, error), so a body that means
    different things to a proxy or audit log and to the service must be refused."""
    async with nothing_written(s):
        cases = [
            ("POST", "/contacts", b'{"name": "Shown", "name": "Stored"}'),
            ("PATCH", f"/contacts/{s.contact_id}", b'{"name": "A", "name": "B"}'),
            (
                "POST",
                "/deals",
                b'{"contact_id": %d, "title": "T", "amount": "1", "amount": "1000"}' % s.contact_id,
            ),
            ("PATCH", f"/deals/{s.deal_id}", b'{"status": "lost", "status": "won"}'),
            ("POST", "/tasks", b'{"deal_id": %d, "title": "A", "title": "B"}' % s.deal_id),
            (
                "POST",
                f"/deals/{s.deal_id}/activities",
                b'{"type": "comment", "payload": {"text": "a", "text": "b"}}',
            ),
            (
                "PATCH",
                f"/organizations/{s.org_id}/members/{s.member.id}",
                b'{"role": "member", "role": "admin"}',
            ),
        ]
        for method, path, body in cases:
            with subtests.test(f"{method} {path}"):
                await expect_refused(s, send(s, method, path, body), 400, 422)


async def test_two_megabyte_bodies_are_413(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        big = b'{"name": "' + b"a" * (2 * BODY_LIMIT) + b'"}'

        async def chunked() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 64 * 1024):
                yield big[start : start + 64 * 1024]

        for method, path in bodies(s):
            with subtests.test(f"{method} {path}"):
                request = send(s, method, path, big)
                await expect_refused(s, request, 413, code="PAYLOAD_TOO_LARGE")
            with subtests.test(f"{method} {path} chunked"):
                request = send(s, method, path, chunked())
                await expect_refused(s, request, 413, code="PAYLOAD_TOO_LARGE")


# --- amounts ------------------------------------------------------------------------------

BAD_AMOUNTS = [
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'"NaN"',
    b'"nan"',
    b'"Infinity"',
    b'"-Infinity"',
    b'"inf"',
    b'"1e400"',
    b"1234567890123",
    b'"1234567890123"',
    b"1234567890123.5",
    b"9999999999999.99",
    b"1.005",
    b'"1.005"',
    b"0.001",
    b"-1",
    b"-0.01",
    b'"-0.01"',
    b'"abc"',
    b'""',
    b"true",
    b"[]",
    b"{}",
    b"null",
]


async def test_bad_amounts_are_422(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        for amount in BAD_AMOUNTS:
            with subtests.test(f"create <- {amount!r}"):
                body = b'{"contact_id": %d, "title": "T", "amount": %s}' % (s.contact_id, amount)
                problem = await expect_refused(s, send(s, "POST", "/deals", body), 422)
                assert problem["errors"][0]["loc"][:2] == ["body", "amount"], problem
            with subtests.test(f"update <- {amount!r}"):
                body = b'{"amount": %s}' % amount
                problem = await expect_refused(
                    s, send(s, "PATCH", f"/deals/{s.deal_id}", body), 422
                )
                assert "amount" in json.dumps(problem["errors"]), problem


async def test_bad_amount_filters_are_422(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        for name in ("min_amount", "max_amount"):
            for value in ("1e400", "NaN", "Infinity", "-Infinity", "-1", "1.005", "1234567890123"):
                with subtests.test(f"{name}={value}"):
                    request = send(s, "GET", f"/deals?{name}={value}")
                    await expect_refused(s, request, 422, code="VALIDATION_ERROR")


async def stored_amount(engine: AsyncEngine, deal_id: int) -> Decimal:
    """Read through the column type (SQLite keeps integer cents, PostgreSQL NUMERIC)."""
    async with engine.connect() as conn:
        value = await conn.scalar(select(Deal.amount).where(Deal.id == deal_id))
    assert isinstance(value, Decimal)
    return value


async def test_negative_zero_is_stored_and_returned_as_zero(
    s: Setup, subtests: pytest.Subtests
) -> None:
    for literal in (b"-0", b"-0.0", b"-0.00", b'"-0"', b'"-0.00"', b"-0e5"):
        with subtests.test(f"create <- {literal!r}"):
            body = b'{"contact_id": %d, "title": "Zero", "amount": %s}' % (s.contact_id, literal)
            response = await send(s, "POST", "/deals", body)
            assert response.status_code == 201, response.text
            assert response.json()["amount"] == 0
            assert '"amount":-' not in response.text.replace(" ", "")
            stored = await stored_amount(s.engine, response.json()["id"])
            assert stored == 0
            assert not stored.is_signed()
        with subtests.test(f"update <- {literal!r}"):
            response = await send(s, "PATCH", f"/deals/{s.deal_id}", b'{"amount": %s}' % literal)
            assert response.status_code == 200, response.text
            assert response.json()["amount"] == 0
            assert '"amount":-' not in response.text.replace(" ", "")
            stored = await stored_amount(s.engine, s.deal_id)
            assert stored == 0
            assert not stored.is_signed()


async def test_largest_amount_round_trips_exactly(s: Setup) -> None:
    for literal, expected in ((b"999999999999.99", "999999999999.99"), (b'"0.01"', "0.01")):
        body = b'{"contact_id": %d, "title": "Max", "amount": %s}' % (s.contact_id, literal)
        response = await send(s, "POST", "/deals", body)
        assert response.status_code == 201, response.text
        assert str(response.json()["amount"]) == expected
        assert await stored_amount(s.engine, response.json()["id"]) == Decimal(expected)


# --- dates --------------------------------------------------------------------------------

BAD_DATES = ["0000-01-01", "9999-12-31", "2024-02-30", "2023-02-29", "2024-13-01", "2024-00-10"]
BAD_DATES += ["2024-1-1", "01/02/2024", "not a date", "", "10000-01-01", "-2024-01-01"]


async def test_impossible_dates_are_422(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        for value in BAD_DATES:
            with subtests.test(f"create due_date={value!r}"):
                body = {"deal_id": s.deal_id, "title": "T", "due_date": value}
                request = send(s, "POST", "/tasks", json.dumps(body).encode())
                problem = await expect_refused(s, request, 422, code="VALIDATION_ERROR")
                assert problem["errors"][0]["loc"] == ["body", "due_date"], problem
            with subtests.test(f"update due_date={value!r}"):
                body = {"due_date": value}
                request = send(s, "PATCH", f"/tasks/{s.task_id}", json.dumps(body).encode())
                await expect_refused(s, request, 422, code="VALIDATION_ERROR")
            for name in ("due_before", "due_after"):
                with subtests.test(f"{name}={value!r}"):
                    request = send(s, "GET", f"/tasks?{urlencode({name: value})}")
                    await expect_refused(s, request, 422, code="VALIDATION_ERROR")


# --- ids ----------------------------------------------------------------------------------


def id_paths(s: Setup) -> list[tuple[str, str, Any]]:
    """(method, path with {id} in the id slot, body)."""
    org = f"/organizations/{s.org_id}"
    return [
        ("GET", "/contacts/{id}", None),
        ("PATCH", "/contacts/{id}", {"name": "X"}),
        ("DELETE", "/contacts/{id}", None),
        ("GET", "/deals/{id}", None),
        ("PATCH", "/deals/{id}", {"title": "X"}),
        ("DELETE", "/deals/{id}", None),
        ("GET", "/deals/{id}/activities", None),
        ("POST", "/deals/{id}/activities", {"type": "comment", "payload": {"text": "x"}}),
        ("GET", "/tasks/{id}", None),
        ("PATCH", "/tasks/{id}", {"title": "X"}),
        ("DELETE", "/tasks/{id}", None),
        ("GET", "/organizations/{id}", None),
        ("PATCH", "/organizations/{id}", {"name": "X"}),
        ("GET", "/organizations/{id}/members", None),
        ("POST", "/organizations/{id}/members", {"email": s.stranger.email, "role": "member"}),
        ("PATCH", org + "/members/{id}", {"role": "manager"}),
        ("DELETE", org + "/members/{id}", None),
    ]


def encode(body: Any) -> bytes | None:
    return None if body is None else json.dumps(body).encode()


async def test_out_of_range_ids_in_paths_are_422(s: Setup, subtests: pytest.Subtests) -> None:
    async with nothing_written(s):
        for method, template, body in id_paths(s):
            for bad in BAD_IDS:
                if bad == "":
                    continue  # an empty segment is another route (or none), not a bad id
                with subtests.test(f"{method} {template} id={bad}"):
                    path = template.replace("{id}", bad)
                    request = send(s, method, path, encode(body))
                    await expect_refused(s, request, 422, code="VALIDATION_ERROR")


async def test_the_largest_id_is_simply_not_found(s: Setup, subtests: pytest.Subtests) -> None:
    """2**63-1 is a valid id (64-bit): no overflow, no 500, just "no such record"."""
    async with nothing_written(s):
        for method, template, body in id_paths(s):
            with subtests.test(f"{method} {template}"):
                path = template.replace("{id}", str(MAX_ID))
                expected = 403 if template.startswith("/organizations/{id}") else 404
                await expect_refused(s, send(s, method, path, encode(body)), expected)
        with subtests.test("X-Organization-Id"):
            request = send(s, "GET", "/contacts", headers={"X-Organization-Id": str(MAX_ID)})
            await expect_refused(s, request, 403, code="NOT_A_MEMBER")
        with subtests.test("contact_id in a body"):
            body = encode({"contact_id": MAX_ID, "title": "T"})
            await expect_refused(s, send(s, "POST", "/deals", body), 400, code="CONTACT_NOT_FOUND")
        with subtests.test("deal_id in a body"):
            body = encode({"deal_id": MAX_ID, "title": "T"})
            await expect_refused(s, send(s, "POST", "/tasks", body), 404, code="DEAL_NOT_FOUND")
        with subtests.test("owner_id in a body"):
            body = encode({"owner_id": MAX_ID})
            request = send(s, "PATCH", f"/deals/{s.deal_id}", body)
            await expect_refused(s, request, 400, code="OWNER_NOT_A_MEMBER")
        for path in (
            "/deals?contact_id=",
            "/deals?owner_id=",
            "/contacts?owner_id=",
            "/tasks?deal_id=",
        ):
            with subtests.test(path):
                response = await send(s, "GET", f"{path}{MAX_ID}")
                assert response.status_code == 200, response.text
                assert response.json()["total"] == 0


async def test_out_of_range_ids_in_queries_headers_and_bodies_are_422(
    s: Setup, subtests: pytest.Subtests
) -> None:
    async with nothing_written(s):
        for bad in BAD_IDS:
            for path, name in (
                ("/contacts", "owner_id"),
                ("/deals", "owner_id"),
                ("/deals", "contact_id"),
                ("/tasks", "deal_id"),
            ):
                if bad == "":
                    continue
                with subtests.test(f"{path}?{name}={bad}"):
                    request = send(s, "GET", f"{path}?{name}={bad}")
                    await expect_refused(s, request, 422, code="VALIDATION_ERROR")
            for method, path, body in (
                ("GET", "/contacts", None),
                ("POST", "/contacts", {"name": "X"}),
                ("GET", "/analytics/deals/summary", None),
            ):
                with subtests.test(f"{method} {path} X-Organization-Id={bad!r}"):
                    request = send(
                        s, method, path, encode(body), headers={"X-Organization-Id": bad}
                    )
                    problem = await expect_refused(s, request, 422, code="VALIDATION_ERROR")
                    assert problem["errors"][0]["loc"][0] == "header", problem
            if bad == "1e3":
                continue  # the JSON number 1e3 *is* 1000, a well-formed id
            literal = json.dumps(bad).encode() if bad in ("", "abc") else bad.encode()
            for method, path, template in (
                ("POST", "/deals", b'{"contact_id": %s, "title": "T"}'),
                ("POST", "/tasks", b'{"deal_id": %s, "title": "T"}'),
                ("PATCH", f"/deals/{s.deal_id}", b'{"contact_id": %s}'),
                ("PATCH", f"/deals/{s.deal_id}", b'{"owner_id": %s}'),
                ("PATCH", f"/contacts/{s.contact_id}", b'{"owner_id": %s}'),
            ):
                with subtests.test(f"{method} {path} body id={bad!r}"):
                    request = send(s, method, path, template % literal)
                    await expect_refused(s, request, 422, code="VALIDATION_ERROR")
