"""Exports (contract section 16): `GET /{contacts,deals,tasks}/export` as CSV and JSON Lines.

Every test runs on SQLite and on PostgreSQL (`any_api`). The exported values are compared with
what the API's own GET answers for the same records, column by column."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import insert

from app.models import Contact
from app.services.exports import instant
from tests.conftest import AppFactory
from tests.support import (
    Api,
    User,
    assert_problem,
    create_contact,
    create_deal,
    engine_of,
    patch_deal,
    statements_sent,
)

CONTACT_COLUMNS = [
    "id",
    "organization_id",
    "owner_id",
    "name",
    "email",
    "phone",
    "created_at",
    "updated_at",
    "company_id",  # section 17: last, so that the columns before it keep their places
]
DEAL_COLUMNS = [
    "id",
    "organization_id",
    "contact_id",
    "owner_id",
    "title",
    "amount",
    "currency",
    "status",
    "stage",
    "created_at",
    "updated_at",
    "pipeline_id",  # section 17: the columns before keep their places
    "company_id",
]
TASK_COLUMNS = [
    "id",
    "deal_id",
    "title",
    "description",
    "due_date",
    "is_done",
    "created_at",
    "updated_at",
]
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """What an export's CSV cell holds for a value of the API's JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in FORMULA_TRIGGERS:
        return "'" + value
    return str(value)


def parse_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def parse_jsonl(body: bytes) -> list[dict[str, Any]]:
    text = body.decode("utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def export(user: User, kind: str, **params: Any) -> bytes:
    response = await user.get(f"/{kind}/export", params=params)
    assert response.status_code == 200, response.text
    return response.content


async def listed(user: User, kind: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of the list (page mode), in id order."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await user.get(f"/{kind}", params={**params, "page": page, "page_size": 100})
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if page >= body["pages"]:
            return sorted(items, key=lambda item: item["id"])
        page += 1


@pytest.fixture
async def api(any_api: Api) -> Api:
    return any_api


@pytest.fixture
async def owner(api: Api) -> User:
    return await api.register(organization_name="Exporters")


async def sample_data(owner: User) -> None:
    """Records with every kind of value: nulls, Cyrillic and emoji, money with cents, dates,
    booleans, and text a spreadsheet would take for a formula."""
    anna = await owner.post(
        "/contacts",
        json={"name": "Анна Петрова 🚀", "email": "anna@example.com", "phone": "+7 900"},
    )
    assert anna.status_code == 201, anna.text
    bare = await create_contact(owner, '=HYPERLINK("http://x","y")')
    first = await create_deal(owner, anna.json()["id"], 'Сделка, "кавычки"', amount="12500.50")
    await create_deal(owner, bare, "@SUM(A1)", amount="0.07", currency="eur")
    third = await create_deal(owner, bare, "-5 plain", amount="999999999999.99")
    await patch_deal(owner, third["id"], status="won", stage="proposal")
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    for body in (
        {"deal_id": first["id"], "title": "Позвонить 📞", "due_date": tomorrow},
        {"deal_id": first["id"], "title": "No date", "description": "\tTab first"},
        {"deal_id": third["id"], "title": "+done", "description": "\rline\nbreaks, commas"},
    ):
        response = await owner.post("/tasks", json=body)
        assert response.status_code == 201, response.text
    done = (await owner.get("/tasks", params={"page_size": 100})).json()["items"][-1]
    patched = await owner.patch(f"/tasks/{done['id']}", json={"is_done": True})
    assert patched.status_code == 200, patched.text


@pytest.mark.parametrize(
    ("kind", "columns"),
    [("contacts", CONTACT_COLUMNS), ("deals", DEAL_COLUMNS), ("tasks", TASK_COLUMNS)],
)
async def test_csv_has_the_header_and_every_value_the_api_answers(
    owner: User, kind: str, columns: list[str]
) -> None:
    await sample_data(owner)
    response = await owner.get(f"/{kind}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == f'attachment; filename="{kind}.csv"'
    assert not response.content.startswith(b"\xef\xbb\xbf")  # a BOM only when asked for
    assert b"\r\n" in response.content  # RFC 4180 line ends

    header, *rows = parse_csv(response.content)
    assert header == columns
    items = await listed(owner, kind)
    assert len(items) == (2 if kind == "contacts" else 3)
    assert rows == [[csv_cell(item[column]) for column in columns] for item in items]


@pytest.mark.parametrize("kind", ["contacts", "deals", "tasks"])
async def test_json_lines_equal_the_api_values(owner: User, kind: str) -> None:
    await sample_data(owner)
    response = await owner.get(f"/{kind}/export", params={"format": "jsonl", "bom": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == f'attachment; filename="{kind}.jsonl"'
    assert not response.content.startswith(b"\xef\xbb\xbf")  # CSV only
    lines = parse_jsonl(response.content)
    items = await listed(owner, kind)
    assert lines == items
    for line, item in zip(lines, items, strict=True):
        assert list(line) == list(item)  # the same keys in the same order
        # The exact JSON values: the GET of the single record answers the same text.
        single = (await owner.get(f"/{kind}/{item['id']}")).json()
        assert line == single


async def test_formulas_are_neutralised_in_csv_but_not_in_json_lines(owner: User) -> None:
    await sample_data(owner)
    contacts = {row[3]: row for row in parse_csv(await export(owner, "contacts"))[1:]}
    assert '\'=HYPERLINK("http://x","y")' in contacts
    assert contacts["Анна Петрова 🚀"][5] == "'+7 900"
    deals = [row[4] for row in parse_csv(await export(owner, "deals"))[1:]]
    assert deals == ['Сделка, "кавычки"', "'@SUM(A1)", "'-5 plain"]
    tasks = [row[2:4] for row in parse_csv(await export(owner, "tasks"))[1:]]
    assert tasks == [
        ["Позвонить 📞", ""],
        ["No date", "'\tTab first"],
        ["'+done", "'\rline\nbreaks, commas"],
    ]
    lines = parse_jsonl(await export(owner, "contacts", format="jsonl"))
    assert {line["name"] for line in lines} == {'=HYPERLINK("http://x","y")', "Анна Петрова 🚀"}
    lines = parse_jsonl(await export(owner, "tasks", format="jsonl"))
    assert lines[2]["description"] == "\rline\nbreaks, commas"


async def test_the_bom_comes_only_on_request(owner: User) -> None:
    await create_contact(owner, "Zoë")
    plain = await export(owner, "contacts")
    marked = await export(owner, "contacts", bom="true")
    assert marked == b"\xef\xbb\xbf" + plain
    assert await export(owner, "contacts", bom="false") == plain
    assert plain.decode("utf-8").splitlines()[1].split(",")[3] == "Zoë"


async def test_utf8_text_survives_both_formats(owner: User) -> None:
    name = "Ёлка 🎄 «ёж» 中文"
    await create_contact(owner, name)
    assert parse_csv(await export(owner, "contacts"))[1][3] == name
    assert parse_jsonl(await export(owner, "contacts", format="jsonl"))[0]["name"] == name


@pytest.mark.parametrize(
    ("kind", "filters"),
    [
        ("contacts", {"search": "петров"}),
        ("contacts", {"search": "EXAMPLE.com"}),
        ("deals", {"status": ["new"]}),
        ("deals", {"status": ["won", "new"], "min_amount": "1"}),
        ("deals", {"stage": "proposal"}),
        ("deals", {"max_amount": "12500.50"}),
        ("deals", {"search": "сделка"}),
        ("tasks", {"only_open": "true"}),
        ("tasks", {"due_after": "2000-01-01"}),
    ],
)
async def test_filters_give_the_rows_the_list_gives(
    owner: User, kind: str, filters: dict[str, Any]
) -> None:
    await sample_data(owner)
    expected = await listed(owner, kind, **filters)
    body = await export(owner, kind, format="jsonl", **filters)
    assert parse_jsonl(body) == expected
    assert 0 < len(expected) < len(await listed(owner, kind))  # the filter did select


async def test_filters_by_reference(owner: User) -> None:
    await sample_data(owner)
    deals = await listed(owner, "deals")
    contact_id, deal_id = deals[0]["contact_id"], deals[0]["id"]
    exported = parse_jsonl(await export(owner, "deals", format="jsonl", contact_id=contact_id))
    assert [d["id"] for d in exported] == [deals[0]["id"]]
    tasks = parse_jsonl(await export(owner, "tasks", format="jsonl", deal_id=deal_id))
    assert tasks == await listed(owner, "tasks", deal_id=deal_id)
    assert len(tasks) == 2
    mine = parse_jsonl(await export(owner, "contacts", format="jsonl", owner_id=owner.id))
    assert len(mine) == 2


async def test_invalid_options_and_filters_are_422(owner: User) -> None:
    for path, params in (
        ("/deals/export", {"format": "xlsx"}),
        ("/deals/export", {"bom": "perhaps"}),
        ("/deals/export", {"status": "bogus"}),
        ("/deals/export", {"min_amount": "-1"}),
        ("/tasks/export", {"due_before": "yesterday"}),
        ("/contacts/export", {"owner_id": "0"}),
    ):
        response = await owner.get(path, params=params)
        assert_problem(response, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("kind", ["contacts", "deals", "tasks"])
async def test_nothing_matches_only_the_header(owner: User, kind: str) -> None:
    header = ",".join(
        {"contacts": CONTACT_COLUMNS, "deals": DEAL_COLUMNS, "tasks": TASK_COLUMNS}[kind]
    )
    assert await export(owner, kind) == (header + "\r\n").encode()
    assert await export(owner, kind, format="jsonl") == b""


async def test_another_organization_sees_only_its_own_rows(api: Api, owner: User) -> None:
    await sample_data(owner)
    stranger = await api.register(organization_name="Elsewhere")
    await create_deal(stranger, await create_contact(stranger, "Theirs"), "Their deal")
    theirs = parse_jsonl(await export(stranger, "deals", format="jsonl"))
    assert [deal["title"] for deal in theirs] == ["Their deal"]
    assert len(parse_jsonl(await export(owner, "deals", format="jsonl"))) == 3
    for kind in ("contacts", "deals", "tasks"):
        response = await stranger.get(
            f"/{kind}/export", headers=stranger.headers(owner.organization_id)
        )
        assert_problem(response, 403, "NOT_A_MEMBER")
        response = await api.client.get(api.url(f"/{kind}/export"))
        assert response.status_code == 401


async def test_a_member_exports_what_the_list_shows_them(api: Api, owner: User) -> None:
    await sample_data(owner)
    member = await api.member_of(owner, "member")
    for kind in ("contacts", "deals", "tasks"):
        exported = parse_jsonl(await export(member, kind, format="jsonl"))
        assert exported == await listed(member, kind)
        assert len(exported) == (2 if kind == "contacts" else 3)


async def test_head_answers_the_headers_without_reading_rows(api: Api, owner: User) -> None:
    await sample_data(owner)
    with statements_sent(engine_of(api), lambda sql: "FROM deals" in sql) as seen:
        response = await api.client.head(
            api.url("/deals/export"), headers=owner.headers(), params={"format": "jsonl"}
        )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == 'attachment; filename="deals.jsonl"'
    assert seen == []
    response = await api.client.head(api.url("/deals/export"))
    assert response.status_code == 401


async def insert_contacts(api: Api, organization_id: int, owner_id: int, count: int) -> None:
    moment = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    async with engine_of(api).begin() as connection:
        await connection.execute(
            insert(Contact),
            [
                {
                    "organization_id": organization_id,
                    "owner_id": owner_id,
                    "name": f"Bulk {number}",
                    "search_text": f"bulk {number}",
                    "created_at": moment,
                    "updated_at": moment,
                }
                for number in range(count)
            ],
        )


async def test_a_large_export_is_read_in_batches_each_row_once(
    make_api: AppFactory, any_api_url: str
) -> None:
    api = await make_api(any_api_url, EXPORT_BATCH_ROWS=500)
    owner = await api.register()
    await insert_contacts(api, owner.organization_id, owner.id, 3_000)
    other = await api.register()
    await insert_contacts(api, other.organization_id, other.id, 10)

    def batch(sql: str) -> bool:
        return "FROM contacts" in sql and "ORDER BY contacts.id" in sql

    with statements_sent(engine_of(api), batch) as seen:
        body = await export(owner, "contacts")
    header, *rows = parse_csv(body)
    assert header == CONTACT_COLUMNS
    ids = [int(row[0]) for row in rows]
    assert len(ids) == 3_000
    assert ids == sorted(set(ids))  # each row once, in id order
    assert {row[1] for row in rows} == {str(owner.organization_id)}
    assert rows[0][6] == "2026-01-15T10:00:00Z"
    # 6 full batches, and a 7th that finds the end.
    assert len(seen) == 7
    if engine_of(api).dialect.name == "postgresql":
        # One snapshot for the whole export.
        assert {statement.isolation_level for statement in seen} == {"REPEATABLE READ"}

    with statements_sent(engine_of(api), batch) as seen:
        lines = parse_jsonl(await export(owner, "contacts", format="jsonl", search="bulk 1"))
    assert len(lines) == 1 + 10 + 100 + 1000  # bulk 1, bulk 1x, bulk 1xx, bulk 1xxx
    assert len(seen) == 3


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_api_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_an_abandoned_export_gives_its_connection_back(
    make_api: AppFactory, any_api_url: str
) -> None:
    """The client goes away after the first chunk: the stream stops and the export's
    connection is back in the pool at once."""
    api = await make_api(any_api_url, EXPORT_BATCH_ROWS=100)
    owner = await api.register()
    await insert_contacts(api, owner.organization_id, owner.id, 2_000)
    pool: Any = engine_of(api).pool
    first_chunk = asyncio.Event()
    sent: list[dict[str, Any]] = []
    checked_out: list[int] = []

    async def receive() -> dict[str, Any]:
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            checked_out.append(pool.checkedout())
            first_chunk.set()
            await asyncio.sleep(0.05)  # the client is gone by the time the next one is sent

    headers = [(k.lower().encode(), v.encode()) for k, v in owner.headers().items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": api.url("/contacts/export"),
        "raw_path": api.url("/contacts/export").encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    await asyncio.wait_for(api.app(scope, receive, send), timeout=30)
    assert sent[0]["status"] == 200
    assert checked_out[0] >= 1  # the export held a connection while streaming
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert 0 < body.count(b"\r\n") < 2_001  # stopped before the end
    assert pool.checkedout() == 0


async def test_an_export_counts_as_one_request_for_rate_limits(
    make_api: AppFactory, any_api_url: str
) -> None:
    """However many batches it reads. The organization's limit is counted once the tenant is
    resolved, inside the export's snapshot: refused there, the export lets its connection go."""
    api = await make_api(any_api_url, RATE_LIMIT_ORGANIZATION_PER_MINUTE=3, EXPORT_BATCH_ROWS=2)
    owner = await api.register()
    await insert_contacts(api, owner.organization_id, owner.id, 9)
    for remaining in (2, 1, 0):
        response = await owner.get("/contacts/export")
        assert response.status_code == 200, response.text
        assert f'"organization";r={remaining};' in response.headers["ratelimit"]
        assert response.content.count(b"\r\n") == 10
    assert_problem(await owner.get("/contacts/export"), 429, "RATE_LIMITED")
    pool: Any = engine_of(api).pool
    assert pool.checkedout() == 0


def test_timestamps_are_written_as_the_api_writes_them() -> None:
    adapter = TypeAdapter(datetime)
    for moment in (
        datetime(2026, 1, 15, 10, 0, tzinfo=UTC),
        datetime(2026, 1, 15, 10, 0, 0, 120000, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 15, 10, 0, 0, 1, tzinfo=UTC),
    ):
        assert instant(moment) == json.loads(adapter.dump_json(moment))
    # Another offset is converted to UTC first.
    plus_two = datetime(2026, 1, 15, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert instant(plus_two) == "2026-01-15T10:00:00Z"


async def test_a_rule_added_to_the_lists_where_clause_applies_to_exports(
    owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports build on the list's own WHERE clause (`_matching`), so a rule the lists gain
    (leaving out trashed records, say) holds for exports with no change to them."""
    from app.models import Deal
    from app.repositories.deals import DealRepository

    await sample_data(owner)
    matching = DealRepository._matching

    def without_won(self: DealRepository, filters: Any) -> Any:
        return matching(self, filters).where(Deal.status != "won")

    monkeypatch.setattr(DealRepository, "_matching", without_won)
    exported = parse_jsonl(await export(owner, "deals", format="jsonl"))
    assert [deal["status"] for deal in exported] == ["new", "new"]
    assert exported == await listed(owner, "deals")
