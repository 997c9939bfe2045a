"""Imports (`/imports`), on SQLite and on PostgreSQL: files as spreadsheets save them, every
rule of the API applied to each row, errors by row and column, dry runs that write nothing,
upserts by email, cancel, resuming after a dead worker, and imports racing normal writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db.types import utcnow
from app.jobs.imports import ImportRunner
from tests.support import (
    Api,
    User,
    assert_problem,
    count_rows,
    engine_of,
    run_cli,
    sessions_of,
)


def runner(
    api: Api,
    name: str = "test-worker",
    *,
    clock: Callable[[], datetime] = utcnow,
    slice_seconds: float = 10.0,
    **settings: Any,
) -> ImportRunner:
    """A worker's import runner on the app's database; `slice_seconds=0`: one batch per
    `run_once`."""
    config = api.app.state.settings.model_copy(update=settings)
    return ImportRunner(
        sessions_of(api), config, name=name, clock=clock, slice_seconds=slice_seconds
    )


async def run_all(api: Api, **settings: Any) -> None:
    """Work every queued import to its end, as the background worker does."""
    worker = runner(api, **settings)
    while await worker.run_once():
        pass


async def upload(
    user: User,
    content: bytes | str,
    *,
    kind: str = "contacts",
    filename: str = "contacts.csv",
    content_type: str = "text/csv",
    headers: dict[str, str] | None = None,
    **form: Any,
) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    fields = {
        "kind": kind,
        **{k: str(v).lower() if isinstance(v, bool) else v for k, v in form.items()},
    }
    return await user.post(
        "/imports", files={"file": (filename, data, content_type)}, data=fields, headers=headers
    )


async def imported(user: User, content: bytes | str, **kwargs: Any) -> dict[str, Any]:
    """Upload, run the worker to the end, and answer the import as `GET` shows it."""
    response = await upload(user, content, **kwargs)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    await run_all(user.api)
    return await status_of(user, response.json()["id"])


async def status_of(user: User, import_id: int) -> dict[str, Any]:
    response = await user.get(f"/imports/{import_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def contacts_of(user: User) -> list[dict[str, Any]]:
    response = await user.get("/contacts", params={"page_size": 100, "order": "asc"})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def table_counts(api: Api) -> tuple[int, int, int]:
    engine = engine_of(api)
    return (
        await count_rows(engine, "contacts"),
        await count_rows(engine, "deals"),
        await count_rows(engine, "events"),
    )


def errors_of(body: dict[str, Any]) -> list[tuple[int, str | None, str]]:
    return [(e["row"], e["column"], e["code"]) for e in body["errors"]]


# A spreadsheet's export: BOM, `;`, a quoted cell with a newline and a `;`, Cyrillic, a
# neutralised formula, and exactly five bad rows (rows 3, 5, 6, 8 and 10).
SPREADSHEET = (
    "\ufeffName;E-Mail;Phone\r\n"
    "Анна Петрова;anna@example.com;+7 900 000 00 01\r\n"
    '"Boris ""B"" Ivanov";boris@example.com;"+7 900\n000 00 02"\r\n'
    ";nobody@example.com;1\r\n"
    '"Multi\r\nline; name";multi@example.com;\r\n'
    "Вера;not-an-email;\r\n"  # noqa: RUF001
    "Глеб;gleb@example;\r\n"
    "'=SUM(A1);formula@example.com;'+1 555\r\n"
    "   ;blank@example.com;\r\n"
    "Дмитрий;dmitry@example.com;\r\n"
    f"{'x' * 201};long@example.com;\r\n"
)


async def test_a_spreadsheet_csv_imports_its_good_rows_and_reports_the_five_bad_ones(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    body = await imported(owner, SPREADSHEET.encode("utf-8"))
    assert body["status"] == "succeeded", body
    assert (body["rows_total"], body["rows_done"]) == (10, 10)
    assert (body["created"], body["updated"], body["skipped"], body["failed"]) == (5, 0, 0, 5)
    assert errors_of(body) == [
        (3, "Name", "VALIDATION_ERROR"),
        (5, "E-Mail", "VALIDATION_ERROR"),
        (6, "E-Mail", "VALIDATION_ERROR"),
        (8, "Name", "VALIDATION_ERROR"),
        (10, "Name", "VALIDATION_ERROR"),
    ]
    contacts = {c["email"]: c for c in await contacts_of(owner)}
    assert set(contacts) == {
        "anna@example.com",
        "boris@example.com",
        "multi@example.com",
        "formula@example.com",
        "dmitry@example.com",
    }
    assert contacts["anna@example.com"]["name"] == "Анна Петрова"
    assert contacts["boris@example.com"]["name"] == 'Boris "B" Ivanov'
    assert contacts["boris@example.com"]["phone"] == "+7 900\n000 00 02"
    assert contacts["multi@example.com"]["name"] == "Multi\r\nline; name"
    assert contacts["formula@example.com"]["name"] == "=SUM(A1)"  # the export's `'` is removed
    assert contacts["formula@example.com"]["phone"] == "+1 555"
    assert all(c["owner_id"] == owner.id for c in contacts.values())
    # Cyrillic is searchable like any typed contact.
    found = await owner.get("/contacts", params={"search": "анна"})
    assert [c["email"] for c in found.json()["items"]] == ["anna@example.com"]
    # Every error, paged, and the file is gone once the import is done.
    errors = await owner.get(f"/imports/{body['id']}/errors", params={"page_size": 2})
    assert errors.status_code == 200
    assert (errors.json()["total"], len(errors.json()["items"])) == (5, 2)
    assert await count_rows(engine_of(any_api), "import_files") == 0


async def test_every_imported_contact_has_its_event_in_the_feed(any_api: Api) -> None:
    owner = await any_api.register()
    first = await owner.get("/events", params={"limit": 1000})
    cursor = first.json()["next_cursor"]
    body = await imported(owner, "name,email\nAnn,ann@example.com\nBob,bob@example.com\n")
    assert body["created"] == 2
    feed = (await owner.get("/events", params={"after": cursor, "limit": 1000})).json()["items"]
    assert [e["type"] for e in feed] == ["contact.created", "contact.created"]
    assert [e["data"]["object"]["email"] for e in feed] == ["ann@example.com", "bob@example.com"]
    assert all(e["actor"] == {"type": "user", "id": owner.id} for e in feed)
    contacts = await contacts_of(owner)
    assert [e["data"]["object"] for e in feed] == contacts

    update = await imported(
        owner, "name,email\nAnnie,ANN@example.com\nBob,bob@example.com\n", on_conflict="update"
    )
    assert (update["created"], update["updated"], update["skipped"]) == (0, 1, 1)
    feed = (await owner.get("/events", params={"after": cursor, "limit": 1000})).json()["items"]
    assert [e["type"] for e in feed][2:] == ["contact.updated"]
    assert feed[2]["data"]["changes"] == {"name": ["Ann", "Annie"]}


async def test_a_dry_run_writes_nothing_and_reports_what_would_happen(any_api: Api) -> None:
    owner = await any_api.register()
    await imported(owner, "name,email\nAnn,ann@example.com\n")
    before = await table_counts(any_api)
    body = await imported(
        owner,
        "name,email\nAnnie,ann@example.com\nBob,bob@example.com\n,bad@example.com\n",
        dry_run=True,
        on_conflict="update",
    )
    assert body["status"] == "succeeded"
    assert body["dry_run"] is True
    assert (body["created"], body["updated"], body["skipped"], body["failed"]) == (1, 1, 0, 1)
    assert errors_of(body) == [(3, "name", "VALIDATION_ERROR")]
    assert await table_counts(any_api) == before
    assert [c["name"] for c in await contacts_of(owner)] == ["Ann"]

    contact_id = (await contacts_of(owner))[0]["id"]
    deals = await imported(
        owner,
        f"title,contact_id,amount,status\nBig,{contact_id},10,won\nFree,{contact_id},0,won\n",
        kind="deals",
        filename="deals.csv",
        dry_run=True,
    )
    assert (deals["created"], deals["failed"]) == (1, 1)
    assert errors_of(deals) == [(2, "status", "DEAL_WON_REQUIRES_AMOUNT")]
    assert await table_counts(any_api) == before


async def test_on_conflict_skip_leaves_and_update_sets_the_matching_contact(any_api: Api) -> None:
    owner = await any_api.register()
    await imported(owner, "name,email,phone\nAnn,Ann@Example.com,1\n")
    skip = await imported(owner, "name,email,phone\nAnnie,ann@EXAMPLE.com,2\n")
    assert (skip["created"], skip["updated"], skip["skipped"]) == (0, 0, 1)
    [ann] = await contacts_of(owner)
    assert (ann["name"], ann["phone"]) == ("Ann", "1")

    # Only the row's non-empty cells are set; the same values again change nothing.
    update = await imported(
        owner, "name,email,phone\nAnnie,ann@example.com,\n", on_conflict="update"
    )
    assert (update["created"], update["updated"], update["skipped"]) == (0, 1, 0)
    [ann] = await contacts_of(owner)
    assert (ann["name"], ann["phone"]) == ("Annie", "1")
    again = await imported(owner, "name,email\nAnnie,ann@example.com\n", on_conflict="update")
    assert (again["updated"], again["skipped"]) == (0, 1)

    # A second row with the email of a contact created by the first is a conflict too.
    twice = await imported(
        owner, "name,email\nCarl,carl@example.com\nCarlos,CARL@example.com\n", on_conflict="update"
    )
    assert (twice["created"], twice["updated"]) == (1, 1)
    names = {c["email"]: c["name"] for c in await contacts_of(owner)}
    assert names["carl@example.com"] == "Carlos"


async def test_a_member_may_not_update_someone_elses_contact_by_import(any_api: Api) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    await imported(owner, "name,email\nAnn,ann@example.com\n")
    body = await imported(member, "name,email\nAnnie,ann@example.com\n", on_conflict="update")
    assert (body["updated"], body["failed"]) == (0, 1)
    assert errors_of(body) == [(1, "email", "PERMISSION_DENIED")]
    # Nor give a contact to someone else.
    owned = await imported(member, f"name,owner_id\nBea,{owner.id}\n")
    assert errors_of(owned) == [(1, "owner_id", "PERMISSION_DENIED")]
    manager = await any_api.member_of(owner, "manager")
    stranger = await any_api.register()
    given = await imported(manager, f"name,owner_id\nBea,{owner.id}\nCid,{stranger.id}\n")
    assert given["created"] == 1
    assert errors_of(given) == [(2, "owner_id", "OWNER_NOT_A_MEMBER")]


async def test_deals_refer_to_their_contact_by_id_or_email(any_api: Api) -> None:
    owner = await any_api.register()
    await imported(owner, "name,email\nAnn,ann@example.com\n")
    [ann] = await contacts_of(owner)
    other = await any_api.register()
    await imported(other, "name,email\nStranger,stranger@example.com\n")
    [stranger] = await contacts_of(other)
    csv_text = (
        "title,contact_email,contact_id,amount,currency,status,stage\n"
        "By email,ANN@example.com,,1200.50,eur,in_progress,proposal\n"
        f"By id,,{ann['id']},,,,\n"
        "Unknown email,nobody@example.com,,,,,\n"
        f"Other org,,{stranger['id']},,,,\n"
        "Bad amount,ann@example.com,,12.345,,,\n"
        "Won free,ann@example.com,,0,,won,\n"
        "No contact,,,,,,\n"
    )
    body = await imported(owner, csv_text, kind="deals", filename="deals.csv")
    assert (body["created"], body["failed"]) == (2, 5)
    assert errors_of(body) == [
        (3, "contact_email", "CONTACT_NOT_FOUND"),
        (4, "contact_id", "CONTACT_NOT_FOUND"),
        (5, "amount", "VALIDATION_ERROR"),
        (6, "status", "DEAL_WON_REQUIRES_AMOUNT"),
        (7, None, "VALIDATION_ERROR"),
    ]
    deals = (await owner.get("/deals", params={"order": "asc"})).json()["items"]
    assert [(d["title"], d["contact_id"]) for d in deals] == [
        ("By email", ann["id"]),
        ("By id", ann["id"]),
    ]
    first = deals[0]
    assert (first["amount"], first["currency"], first["status"], first["stage"]) == (
        1200.5,
        "EUR",
        "in_progress",
        "proposal",
    )
    # Analytics count them like deals made through the API.
    funnel = (await owner.get("/analytics/deals/funnel")).json()
    counts = {stage["stage"]: stage["count"] for stage in funnel["stages"]}
    assert (counts["qualification"], counts["proposal"]) == (1, 1)
    feed = (await owner.get("/events", params={"types": "deal.*"})).json()["items"]
    assert [e["type"] for e in feed] == ["deal.created", "deal.created"]
    assert [e["data"]["object"] for e in feed] == deals


async def test_json_lines_and_an_explicit_mapping(any_api: Api) -> None:
    owner = await any_api.register()
    lines = (
        '{"Full Name": "Ann", "Mail": "ann@example.com", "id": 7}\n'
        "\n"
        '{"Full Name": "Bob", "Mail": null}\n'
        "[1, 2]\n"
        '{"Full Name": "", "Mail": "x@example.com"}\n'
        "{not json\n"
    )
    mapping = json.dumps({"full name": "name", "MAIL": "email", "id": None})
    body = await imported(
        owner,
        lines,
        filename="people.jsonl",
        content_type="application/x-ndjson",
        mapping=mapping,
    )
    assert body["file_format"] == "jsonl"
    assert (body["rows_total"], body["created"], body["failed"]) == (5, 2, 3)
    assert errors_of(body) == [
        (3, None, "INVALID_ROW"),
        (4, "Full Name", "VALIDATION_ERROR"),
        (5, None, "INVALID_ROW"),
    ]
    assert [(c["name"], c["email"]) for c in await contacts_of(owner)] == [
        ("Ann", "ann@example.com"),
        ("Bob", None),
    ]
    # A mapping to a field the kind does not have is refused up front.
    response = await upload(owner, "a\n1\n", mapping=json.dumps({"a": "title"}))
    assert_problem(response, 422, "IMPORT_FILE_INVALID")


async def test_files_that_cannot_be_imported_are_refused_and_nothing_is_stored(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    cases = [
        (
            upload(owner, "name\nAnn\n", filename="people.xlsx", content_type="application/zip"),
            415,
            "IMPORT_FORMAT_UNSUPPORTED",
        ),
        (upload(owner, "name\nJosé\n".encode("latin-1")), 422, "IMPORT_FILE_INVALID"),
        (upload(owner, "email\nann@example.com\n"), 422, "IMPORT_FILE_INVALID"),
        (upload(owner, ""), 422, "IMPORT_FILE_INVALID"),
        (upload(owner, "title\nX\n", kind="deals"), 422, "IMPORT_FILE_INVALID"),
        (upload(owner, "name\nAnn\n", kind="tasks"), 422, "VALIDATION_ERROR"),
        (upload(owner, "name\nAnn\n", on_conflict="replace"), 422, "VALIDATION_ERROR"),
        (upload(owner, "name\nAnn\n", mapping="[1]"), 422, "IMPORT_FILE_INVALID"),
        (owner.post("/imports", json={"kind": "contacts"}), 415, "UNSUPPORTED_MEDIA_TYPE"),
    ]
    for request, status, code in cases:
        assert_problem(await request, status, code)
    assert await count_rows(engine_of(any_api), "imports") == 0


async def test_a_file_over_import_max_bytes_is_413(make_api: Any, database_url: str) -> None:
    api = await make_api(database_url, IMPORT_MAX_BYTES=2048)
    owner = await api.register()
    small = await upload(owner, "name\n" + "Ann\n" * 100)
    assert small.status_code == 202, small.text
    # Larger than the import limit, and than the other routes' limit would allow too.
    response = await upload(owner, "name\n" + "Ann\n" * 5000)
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert await count_rows(engine_of(api), "imports") == 1


async def test_cancel_stops_a_running_import_between_batches(any_api: Api) -> None:
    owner = await any_api.register()
    rows = "".join(f"Person {i},p{i}@example.com\n" for i in range(25))
    response = await upload(owner, "name,email\n" + rows)
    import_id = response.json()["id"]
    worker = runner(any_api, IMPORT_BATCH_SIZE=10, slice_seconds=0)
    assert await worker.run_once()
    running = await status_of(owner, import_id)
    assert (running["status"], running["rows_done"]) == ("running", 10)
    cancelled = await owner.post(f"/imports/{import_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancel_requested"] is True
    while await worker.run_once():
        pass
    body = await status_of(owner, import_id)
    assert (body["status"], body["rows_done"], body["created"]) == ("cancelled", 10, 10)
    assert len(await contacts_of(owner)) == 10
    assert_problem(await owner.post(f"/imports/{import_id}/cancel"), 409, "IMPORT_FINISHED")
    # A queued import is cancelled at once.
    queued = (await upload(owner, "name\nAnn\n")).json()["id"]
    now = await owner.post(f"/imports/{queued}/cancel")
    assert now.json()["status"] == "cancelled"
    await run_all(any_api)
    assert len(await contacts_of(owner)) == 10


async def test_a_worker_killed_mid_import_is_replaced_and_no_row_is_written_twice(
    any_api: Api,
) -> None:
    owner = await any_api.register()
    rows = "".join(f"Person {i},p{i}@example.com\n" for i in range(30))
    import_id = (await upload(owner, "name,email\n" + rows)).json()["id"]
    dead = runner(any_api, "dead", IMPORT_BATCH_SIZE=10, slice_seconds=0)
    assert await dead.run_once()  # one batch, then the worker "dies" holding the lease
    # Its lease has not run out: nobody else takes the job.
    assert not await runner(any_api, "early").run_once()
    heir = runner(
        any_api, "heir", IMPORT_BATCH_SIZE=10, clock=lambda: utcnow() + timedelta(minutes=5)
    )
    while await heir.run_once():
        pass
    # The dead worker, back to life, has lost the job: it writes nothing more.
    assert not await dead.run_once()
    body = await status_of(owner, import_id)
    assert (body["status"], body["rows_done"], body["created"]) == ("succeeded", 30, 30)
    emails = [c["email"] for c in await contacts_of(owner)]
    assert sorted(emails) == sorted(f"p{i}@example.com" for i in range(30))


async def test_an_import_racing_normal_writes_loses_nothing(any_api: Api) -> None:
    owner = await any_api.register()
    await imported(owner, "name,email\nAnn,ann@example.com\n")
    [ann] = await contacts_of(owner)
    rows = "".join(f"Person {i},p{i}@example.com\n" for i in range(300))
    upsert = "name,email\nAnn (import),ann@example.com\n" + rows
    import_id = (await upload(owner, upsert, on_conflict="update")).json()["id"]

    async def api_writes() -> list[int]:
        ids = []
        for i in range(20):
            created = await owner.post("/contacts", json={"name": f"Typed {i}"})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
            patched = await owner.patch(f"/contacts/{ann['id']}", json={"phone": f"+1 {i}"})
            assert patched.status_code == 200, patched.text
        return ids

    typed, _ = await asyncio.gather(api_writes(), run_all(any_api, IMPORT_BATCH_SIZE=50))
    body = await status_of(owner, import_id)
    assert (body["status"], body["created"], body["updated"]) == ("succeeded", 300, 1)
    contacts = {c["id"]: c for c in await contacts_of_all(owner)}
    assert len(contacts) == 1 + 300 + 20
    assert set(typed) <= set(contacts)
    assert contacts[ann["id"]]["name"] == "Ann (import)"
    assert contacts[ann["id"]]["phone"] == "+1 19"
    # Every change has its event, once.
    events = await count_rows(engine_of(any_api), "events", "type LIKE 'contact.%'")
    assert events == 1 + 300 + 1 + 20 + 20


async def contacts_of_all(user: User) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await user.get("/contacts", params={"page": page, "page_size": 100})
        items.extend(response.json()["items"])
        if page >= response.json()["pages"]:
            return items
        page += 1


async def test_imports_of_another_organization_are_not_found(any_api: Api) -> None:
    owner = await any_api.register()
    other = await any_api.register()
    import_id = (await upload(owner, "name\nAnn\n")).json()["id"]
    for request in (
        other.get(f"/imports/{import_id}"),
        other.get(f"/imports/{import_id}/errors"),
        other.post(f"/imports/{import_id}/cancel"),
    ):
        assert_problem(await request, 404, "IMPORT_NOT_FOUND")
    assert (await other.get("/imports")).json()["total"] == 0
    listed = (await owner.get("/imports")).json()
    assert [i["id"] for i in listed["items"]] == [import_id]


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_the_separator_is_sniffed_from_the_header(separator: str) -> None:
    from app.schemas.imports import CONTACT_FIELDS
    from app.services.import_files import FileFormat, parse

    text = separator.join(["Name", "Email"]) + "\n" + separator.join(['"A, B; C"', "a@x.io"])
    parsed = parse(text.encode(), FileFormat.CSV, CONTACT_FIELDS, {})
    assert parsed.records[0].values == {"name": "A, B; C", "email": "a@x.io"}


async def test_minicrm_import_runs_the_file_as_the_owner_and_reports(
    tmp_path: Path, any_api: Api
) -> None:
    owner = await any_api.register()
    member = await any_api.member_of(owner, "member")
    path = tmp_path / "people.csv"
    path.write_text("Name;Email\nAnn;ann@example.com\n;bad@example.com\n", encoding="utf-8-sig")
    org = str(owner.organization_id)
    result = await run_cli(
        any_api, tmp_path, "import", str(path), "--org", org, "--kind", "contacts"
    )
    assert result.returncode == 0, result.stderr
    assert "status=succeeded" in result.stdout
    assert "created=1" in result.stdout
    assert "failed=1" in result.stdout
    assert "row 2 column 'Name': VALIDATION_ERROR" in result.stderr
    [ann] = await contacts_of(member)
    assert (ann["name"], ann["owner_id"]) == ("Ann", owner.id)
    feed = (await owner.get("/events", params={"types": "contact.*"})).json()["items"]
    assert [(e["type"], e["actor"]) for e in feed] == [
        ("contact.created", {"type": "user", "id": owner.id})
    ]
    dry = await run_cli(
        any_api, tmp_path, "import", str(path), "--org", org, "--kind", "contacts", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert "skipped=1" in dry.stdout
    missing = await run_cli(
        any_api, tmp_path, "import", "nope.csv", "--org", org, "--kind", "deals"
    )
    assert missing.returncode == 2
    assert "cannot read nope.csv" in missing.stderr


async def test_an_upload_retried_with_its_idempotency_key_queues_one_import(any_api: Api) -> None:
    owner = await any_api.register()
    key = {"Idempotency-Key": "import-contacts-1"}
    content = "name,email\nAnn,ann@example.com\n"
    # Each send is encoded afresh (another multipart boundary): the same form all the same.
    first = await upload(owner, content, headers=key)
    again = await upload(owner, content, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await upload(owner, content.replace("Ann", "Bob"), headers=key)
    assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert await count_rows(engine_of(any_api), "imports") == 1


async def test_what_a_file_says_is_stored_as_text_even_with_nul_characters(any_api: Api) -> None:
    owner = await any_api.register()
    lines = '{"na\\u0000me": "", "email": "a@example.com"}\n'
    mapping = json.dumps({"na\u0000me": "name"})
    body = await imported(
        owner, lines, filename="a.jsonl", content_type="application/x-ndjson", mapping=mapping
    )
    # The column is the file's key, less its NUL.
    assert errors_of(body) == [(1, "name", "VALIDATION_ERROR")]


async def test_rows_may_name_a_company_of_the_organization(any_api: Api) -> None:
    owner = await any_api.register()
    company = (await owner.post("/companies", json={"name": "Acme"})).json()
    other = await any_api.register()
    theirs = (await other.post("/companies", json={"name": "Theirs"})).json()
    contacts_csv = (
        "name,email,company_id\n"
        f"Ann,ann@example.com,{company['id']}\n"
        "Bob,bob@example.com,\n"
        f"Cid,cid@example.com,{theirs['id']}\n"
    )
    body = await imported(owner, contacts_csv)
    assert (body["created"], body["failed"]) == (2, 1)
    assert errors_of(body) == [(3, "company_id", "COMPANY_NOT_FOUND")]
    assert [(c["name"], c["company_id"]) for c in await contacts_of(owner)] == [
        ("Ann", company["id"]),
        ("Bob", None),
    ]
    # `on_conflict=update` sets a company as a PATCH would.
    body = await imported(
        owner, f"name,email,company_id\nBob,bob@example.com,{company['id']}\n", on_conflict="update"
    )
    assert body["updated"] == 1
    assert [c["company_id"] for c in await contacts_of(owner)] == [company["id"]] * 2

    deals_csv = (
        "title,contact_email,company_id\n"
        f"Named,ann@example.com,{company['id']}\n"
        f"Foreign,ann@example.com,{theirs['id']}\n"
    )
    body = await imported(owner, deals_csv, kind="deals", filename="deals.csv")
    assert (body["created"], body["failed"]) == (1, 1)
    assert errors_of(body) == [(2, "company_id", "COMPANY_NOT_FOUND")]
    deals = (await owner.get("/deals")).json()["items"]
    assert [(d["title"], d["company_id"]) for d in deals] == [("Named", company["id"])]
    shown = (await owner.get(f"/companies/{company['id']}")).json()
    assert (shown["contacts_count"], shown["open_deals_count"]) == (2, 1)
