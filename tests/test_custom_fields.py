"""Custom fields (contract section 17): definitions, values on contacts, companies and deals,
their validation, filters and sorting, deletion, exports, and the per-key index."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.jobs.custom_field_indexes import keep_custom_field_indexes, reconcile
from tests.conftest import make_settings
from tests.support import Api, Team, User, assert_problem, create_contact
from tests.test_imports import errors_of, imported


async def define(user: User, **body: Any) -> dict[str, Any]:
    body = {"entity": "deal", "label": body.get("key", "Field").title(), **body}
    response = await user.post("/custom-fields", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def new_deal(user: User, contact_id: int, **fields: Any) -> dict[str, Any]:
    response = await user.post("/deals", json={"contact_id": contact_id, "title": "D", **fields})
    assert response.status_code == 201, response.text
    deal: dict[str, Any] = response.json()
    return deal


async def deal_ids(user: User, **params: Any) -> list[int]:
    response = await user.get("/deals", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def invalid_keys(response: Any) -> list[list[Any]]:
    body = assert_problem(response, 422, "VALIDATION_ERROR")
    return [error["loc"] for error in body["errors"]]


SOURCE = {"key": "source", "type": "select", "options": ["web", "referral", "event"]}


# --- definitions -----------------------------------------------------------------------------


async def test_definitions_are_created_listed_read_updated_and_deleted(owner: User) -> None:
    source = await define(owner, **SOURCE, label="Lead source")
    assert source["entity"] == "deal"
    assert source["key"] == "source"
    assert source["options"] == ["web", "referral", "event"]
    assert source["required"] is False
    linkedin = await define(owner, entity="contact", key="linkedin", type="text")
    assert linkedin["options"] is None

    listed = (await owner.get("/custom-fields")).json()
    assert [d["key"] for d in listed] == ["linkedin", "source"]  # by entity: contact, deal
    only_deals = (await owner.get("/custom-fields", params={"entity": "deal"})).json()
    assert [d["id"] for d in only_deals] == [source["id"]]
    assert (await owner.get(f"/custom-fields/{source['id']}")).json() == source

    response = await owner.patch(
        f"/custom-fields/{source['id']}",
        json={"label": "Source", "required": True, "options": ["web", "referral", "event", "ad"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "Source"
    assert response.json()["options"][-1] == "ad"
    assert response.json()["required"] is True

    assert (await owner.delete(f"/custom-fields/{source['id']}")).status_code == 204
    assert_problem(await owner.get(f"/custom-fields/{source['id']}"), 404, "CUSTOM_FIELD_NOT_FOUND")


async def test_definition_rules(owner: User) -> None:
    await define(owner, **SOURCE)
    duplicate = await owner.post("/custom-fields", json={**SOURCE, "entity": "deal", "label": "x"})
    assert_problem(duplicate, 409, "CUSTOM_FIELD_KEY_TAKEN")
    # The same key on another entity is another field.
    await define(owner, **SOURCE, entity="company")

    bad = [
        {"key": "Source", "type": "text"},  # not lower-case
        {"key": "1st", "type": "text"},
        {"key": "a" * 41, "type": "text"},
        {"key": "kind", "type": "select"},  # options missing
        {"key": "kind", "type": "select", "options": []},
        {"key": "kind", "type": "select", "options": ["a", "a"]},
        {"key": "kind", "type": "text", "options": ["a"]},  # options on a text field
        {"key": "kind", "type": "colour"},
    ]
    for body in bad:
        response = await owner.post("/custom-fields", json={"entity": "deal", "label": "L", **body})
        assert_problem(response, 422, "VALIDATION_ERROR")

    field = await define(owner, key="notes", type="text")
    for immutable in ({"key": "other"}, {"type": "number"}, {"entity": "contact"}):
        response = await owner.patch(f"/custom-fields/{field['id']}", json=immutable)
        assert_problem(response, 422, "VALIDATION_ERROR")
    response = await owner.patch(f"/custom-fields/{field['id']}", json={"options": ["a"]})
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_an_option_in_use_cannot_be_removed(owner: User) -> None:
    source = await define(owner, **SOURCE)
    tags = await define(owner, key="tags", type="multiselect", options=["a", "b", "c"])
    contact_id = await create_contact(owner)
    await new_deal(owner, contact_id, custom_fields={"source": "web", "tags": ["b"]})

    response = await owner.patch(
        f"/custom-fields/{source['id']}", json={"options": ["referral", "event"]}
    )
    assert_problem(response, 409, "CUSTOM_FIELD_OPTION_IN_USE")
    response = await owner.patch(f"/custom-fields/{tags['id']}", json={"options": ["a", "c"]})
    assert_problem(response, 409, "CUSTOM_FIELD_OPTION_IN_USE")
    # Unused options go; reordering is fine.
    response = await owner.patch(
        f"/custom-fields/{source['id']}", json={"options": ["event", "web"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["options"] == ["event", "web"]


async def test_who_may_manage_definitions(team: Team) -> None:
    field = await define(team.owner, key="notes", type="text")
    for role in ("manager", "member"):
        user = team.by_role(role)
        assert (await user.get("/custom-fields")).status_code == 200
        assert (await user.get(f"/custom-fields/{field['id']}")).status_code == 200
        response = await user.post(
            "/custom-fields", json={"entity": "deal", "key": "x", "label": "X", "type": "text"}
        )
        assert_problem(response, 403)
        assert_problem(await user.patch(f"/custom-fields/{field['id']}", json={"label": "Y"}), 403)
        assert_problem(await user.delete(f"/custom-fields/{field['id']}"), 403)
    await define(team.admin, key="by_admin", type="boolean")
    response = await team.admin.patch(f"/custom-fields/{field['id']}", json={"label": "Y"})
    assert response.status_code == 200


async def test_another_organizations_definition_is_missing(api: Api, owner: User) -> None:
    field = await define(owner, key="notes", type="text")
    stranger = await api.register(organization_name="Elsewhere")
    for response in (
        await stranger.get(f"/custom-fields/{field['id']}"),
        await stranger.patch(f"/custom-fields/{field['id']}", json={"label": "Mine"}),
        await stranger.delete(f"/custom-fields/{field['id']}"),
    ):
        assert_problem(response, 404, "CUSTOM_FIELD_NOT_FOUND")
    assert (await stranger.get("/custom-fields")).json() == []
    # Its key is free in the other organization, and its values do not apply there.
    await define(stranger, key="notes", type="number")
    contact_id = await create_contact(stranger)
    response = await stranger.post(
        "/deals", json={"contact_id": contact_id, "title": "D", "custom_fields": {"notes": "x"}}
    )
    assert invalid_keys(response) == [["body", "custom_fields", "notes"]]


async def test_definition_events(owner: User) -> None:
    field = await define(owner, key="notes", type="text")
    await owner.patch(f"/custom-fields/{field['id']}", json={"label": "Remarks"})
    await owner.delete(f"/custom-fields/{field['id']}")
    events = (await owner.get("/events", params={"limit": 100})).json()["items"]
    typed = [(e["type"], e["data"]) for e in events if e["type"].startswith("custom_field.")]
    assert [t for t, _ in typed] == [
        "custom_field.created",
        "custom_field.updated",
        "custom_field.deleted",
    ]
    assert typed[1][1]["changes"] == {"label": ["Notes", "Remarks"]}
    assert typed[2][1]["object"]["id"] == field["id"]


# --- values ----------------------------------------------------------------------------------


async def test_values_are_validated_by_type(owner: User) -> None:
    await define(owner, **SOURCE)
    await define(owner, key="tags", type="multiselect", options=["a", "b", "c"])
    await define(owner, key="seats", type="number")
    await define(owner, key="budget", type="money")
    await define(owner, key="closes_on", type="date")
    await define(owner, key="signed", type="boolean")
    await define(owner, key="notes", type="text")
    contact_id = await create_contact(owner)

    good = {
        "source": "web",
        "tags": ["c", "a"],
        "seats": 12,
        "budget": "1234.50",
        "closes_on": "2027-03-31",
        "signed": False,
        "notes": "Call back",
    }
    deal = await new_deal(owner, contact_id, custom_fields=good)
    assert deal["custom_fields"] == {**good, "tags": ["a", "c"], "budget": 1234.5}
    assert (await owner.get(f"/deals/{deal['id']}")).json()["custom_fields"] == deal[
        "custom_fields"
    ]

    bad: dict[str, list[Any]] = {
        "source": ["mail", 1, ["web"]],
        "tags": ["a", ["a", "a"], ["z"], [1]],
        "seats": ["12", True, [1]],
        "budget": ["12.345", -1, "1e3", True, "1000000000000.00"],
        "closes_on": ["2027-02-30", "31/03/2027", 20270331, "2027-03-31T10:00:00Z"],
        "signed": ["true", 1, 0],
        "notes": [1, "x" * 1001],
        "unknown": ["x"],
    }
    for key, values in bad.items():
        for value in values:
            response = await owner.post(
                "/deals",
                json={"contact_id": contact_id, "title": "D", "custom_fields": {key: value}},
            )
            assert invalid_keys(response) == [["body", "custom_fields", key]], (key, value)
    # Every problem at once, each at its key; nothing written.
    response = await owner.patch(
        f"/deals/{deal['id']}", json={"custom_fields": {"seats": "x", "signed": "no"}}
    )
    assert sorted(invalid_keys(response)) == [
        ["body", "custom_fields", "seats"],
        ["body", "custom_fields", "signed"],
    ]
    assert (await owner.get(f"/deals/{deal['id']}")).json() == deal
    # Not a number JSON can carry: refused by the parser before any definition is read.
    response = await owner.post(
        "/deals",
        content=b'{"contact_id": %d, "title": "D", "custom_fields": {"seats": NaN}}' % contact_id,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422


async def test_patch_merges_and_required_fields(owner: User) -> None:
    await define(owner, **SOURCE, required=True)
    await define(owner, key="notes", type="text")
    contact_id = await create_contact(owner)
    response = await owner.post("/deals", json={"contact_id": contact_id, "title": "D"})
    assert invalid_keys(response) == [["body", "custom_fields", "source"]]
    response = await owner.post(
        "/deals",
        json={"contact_id": contact_id, "title": "D", "custom_fields": {"source": None}},
    )
    assert invalid_keys(response) == [["body", "custom_fields", "source"]]

    deal = await new_deal(owner, contact_id, custom_fields={"source": "web", "notes": "n"})
    response = await owner.patch(f"/deals/{deal['id']}", json={"custom_fields": {"notes": None}})
    assert response.json()["custom_fields"] == {"source": "web"}
    response = await owner.patch(f"/deals/{deal['id']}", json={"custom_fields": {"notes": "again"}})
    assert response.json()["custom_fields"] == {"source": "web", "notes": "again"}
    response = await owner.patch(f"/deals/{deal['id']}", json={"custom_fields": {"source": None}})
    assert invalid_keys(response) == [["body", "custom_fields", "source"]]
    response = await owner.patch(f"/deals/{deal['id']}", json={"custom_fields": None})
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_a_field_made_required_later_is_not_retroactive(owner: User) -> None:
    field = await define(owner, key="notes", type="text")
    contact_id = await create_contact(owner)
    deal = await new_deal(owner, contact_id)
    await owner.patch(f"/custom-fields/{field['id']}", json={"required": True})
    response = await owner.patch(f"/deals/{deal['id']}", json={"title": "Renamed"})
    assert response.status_code == 200, response.text
    assert response.json()["custom_fields"] == {}
    response = await owner.post("/deals", json={"contact_id": contact_id, "title": "New"})
    assert invalid_keys(response) == [["body", "custom_fields", "notes"]]


async def test_values_are_part_of_the_record(owner: User) -> None:
    await define(owner, **SOURCE)
    contact_id = await create_contact(owner)
    deal = await new_deal(owner, contact_id, custom_fields={"source": "web"})
    etag = (await owner.get(f"/deals/{deal['id']}")).headers["etag"]

    # The same value again: no write (same updated_at, same ETag, no event).
    same = await owner.patch(f"/deals/{deal['id']}", json={"custom_fields": {"source": "web"}})
    assert same.json()["updated_at"] == deal["updated_at"]
    assert same.headers["etag"] == etag

    changed = await owner.patch(f"/deals/{deal['id']}", json={"custom_fields": {"source": "event"}})
    assert changed.json()["updated_at"] != deal["updated_at"]
    assert changed.headers["etag"] != etag
    stale = await owner.patch(
        f"/deals/{deal['id']}",
        json={"custom_fields": {"source": "web"}},
        headers={"If-Match": etag},
    )
    assert_problem(stale, 412)

    events = (await owner.get("/events", params={"limit": 100, "types": "deal.*"})).json()
    updates = [e for e in events["items"] if e["type"] == "deal.updated"]
    assert [e["data"]["changes"] for e in updates] == [
        {"custom_fields": [{"source": "web"}, {"source": "event"}]}
    ]


async def test_contacts_and_companies_carry_values(owner: User) -> None:
    await define(owner, entity="contact", key="linkedin", type="text")
    await define(owner, entity="company", key="employees", type="number")
    response = await owner.post(
        "/contacts", json={"name": "Ann", "custom_fields": {"linkedin": "in/ann"}}
    )
    assert response.status_code == 201, response.text
    ann = response.json()
    assert ann["custom_fields"] == {"linkedin": "in/ann"}
    response = await owner.post(
        "/contacts", json={"name": "Bob", "custom_fields": {"employees": 3}}
    )
    assert invalid_keys(response) == [["body", "custom_fields", "employees"]]

    response = await owner.post(
        "/companies", json={"name": "Acme", "custom_fields": {"employees": 250}}
    )
    assert response.status_code == 201, response.text
    acme = response.json()
    response = await owner.patch(
        f"/companies/{acme['id']}", json={"custom_fields": {"employees": 300}}
    )
    assert response.json()["custom_fields"] == {"employees": 300}
    await owner.post("/companies", json={"name": "Tiny", "custom_fields": {"employees": 4}})
    await owner.post("/companies", json={"name": "None"})

    page = (await owner.get("/companies", params={"cf.employees.min": 10})).json()
    assert [c["name"] for c in page["items"]] == ["Acme"]
    page = await owner.get("/companies", params={"order_by": "cf.employees", "order": "asc"})
    assert [c["name"] for c in page.json()["items"]] == ["Tiny", "Acme", "None"]
    page = (await owner.get("/contacts", params={"cf.linkedin": "in/ann"})).json()
    assert [c["id"] for c in page["items"]] == [ann["id"]]
    assert page["total"] == 1


# --- filters and sorting --------------------------------------------------------------------


async def test_filters_and_sorting(owner: User) -> None:
    await define(owner, **SOURCE)
    await define(owner, key="tags", type="multiselect", options=["a", "b", "c"])
    await define(owner, key="seats", type="number")
    await define(owner, key="budget", type="money")
    await define(owner, key="closes_on", type="date")
    await define(owner, key="signed", type="boolean")
    contact_id = await create_contact(owner)
    rows = [
        {"source": "web", "tags": ["a"], "seats": 5, "budget": "10.10", "closes_on": "2027-01-09"},
        {"source": "web", "tags": ["a", "b"], "seats": 40, "budget": "9.99", "signed": True},
        {"source": "event", "tags": ["c"], "seats": 100, "closes_on": "2027-01-10"},
        {"signed": False},
    ]
    ids = [(await new_deal(owner, contact_id, custom_fields=row))["id"] for row in rows]
    first, second, third, fourth = ids

    assert await deal_ids(owner, **{"cf.source": "web"}) == [second, first]
    assert await deal_ids(owner, **{"cf.tags": "a"}) == [second, first]
    assert await deal_ids(owner, **{"cf.tags": "b"}) == [second]
    assert await deal_ids(owner, **{"cf.seats.min": 40}) == [third, second]
    assert await deal_ids(owner, **{"cf.seats.min": "5", "cf.seats.max": "40.0"}) == [
        second,
        first,
    ]
    assert await deal_ids(owner, **{"cf.seats": 40}) == [second]
    assert await deal_ids(owner, **{"cf.budget.min": "10.00"}) == [first]
    assert await deal_ids(owner, **{"cf.budget": "9.99"}) == [second]
    assert await deal_ids(owner, **{"cf.closes_on.max": "2027-01-09"}) == [first]
    assert await deal_ids(owner, **{"cf.signed": "true"}) == [second]
    assert await deal_ids(owner, **{"cf.signed": "false"}) == [fourth]
    # With the other filters, and a total of its own (cached totals are per filter set).
    page = (await owner.get("/deals", params={"cf.source": "web", "page_size": 1})).json()
    assert page["total"] == 2
    assert page["pages"] == 2
    page = (await owner.get("/deals", params={"cf.source": "event"})).json()
    assert page["total"] == 1
    assert await deal_ids(owner, **{"cf.source": "web", "search": "nothing"}) == []

    assert await deal_ids(owner, order_by="cf.seats", order="asc") == [first, second, third, fourth]
    assert await deal_ids(owner, order_by="cf.seats", order="desc") == [
        third,
        second,
        first,
        fourth,
    ]
    # Without a value: last, by id in the order's direction.
    assert await deal_ids(owner, order_by="cf.closes_on", order="asc") == [
        first,
        third,
        second,
        fourth,
    ]
    assert await deal_ids(owner, order_by="cf.closes_on", order="desc") == [
        third,
        first,
        fourth,
        second,
    ]
    # Ties by id, in the order's direction.
    assert await deal_ids(owner, order_by="cf.source", order="asc") == [
        third,
        first,
        second,
        fourth,
    ]
    paged = [
        (
            await owner.get("/deals", params={"order_by": "cf.seats", "page_size": 1, "page": n})
        ).json()["items"][0]["id"]
        for n in (1, 2, 3, 4)
    ]
    assert paged == [third, second, first, fourth]


async def test_bad_filters_are_422(owner: User) -> None:
    await define(owner, **SOURCE)
    await define(owner, key="seats", type="number")
    await define(owner, key="tags", type="multiselect", options=["a"])
    cases = {
        "cf.nothing": ("x", ["query", "cf.nothing"]),
        "cf.source": ("mail", ["query", "cf.source"]),
        "cf.seats": ("many", ["query", "cf.seats"]),
        "cf.seats.min": ("inf", ["query", "cf.seats.min"]),
        "cf.source.min": ("web", ["query", "cf.source.min"]),
        "cf.Source": ("web", ["query", "cf.Source"]),
        "cf.seats.avg": ("1", ["query", "cf.seats.avg"]),
    }
    for name, (value, loc) in cases.items():
        response = await owner.get("/deals", params={name: value})
        assert invalid_keys(response) == [loc], name
    for order_by in ("cf.nothing", "cf.tags"):
        response = await owner.get("/deals", params={"order_by": order_by})
        assert invalid_keys(response) == [["query", "order_by"]]
    assert_problem(await owner.get("/deals", params={"order_by": "cf."}), 422)
    # Cursor mode filters, but does not sort by a custom field.
    response = await owner.get("/deals", params={"limit": 10, "cf.source": "web"})
    assert response.status_code == 200, response.text
    response = await owner.get("/deals", params={"limit": 10, "order_by": "cf.seats"})
    assert_problem(response, 422, "CUSTOM_FIELD_ORDER_NOT_SCROLLABLE")


async def test_cursor_mode_with_a_custom_filter(owner: User) -> None:
    await define(owner, **SOURCE)
    contact_id = await create_contact(owner)
    ids = [
        (await new_deal(owner, contact_id, custom_fields={"source": s}))["id"]
        for s in ("web", "event", "web", "web")
    ]
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2, "cf.source": "web"}
    first = (await owner.get("/deals", params=params)).json()
    while True:
        page = (await owner.get("/deals", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [ids[3], ids[2], ids[0]]
    # The cursor continues only the listing with the same custom filter.
    response = await owner.get(
        "/deals", params={"limit": 2, "cf.source": "event", "cursor": first["next_cursor"]}
    )
    assert_problem(response, 422, "INVALID_CURSOR")


# --- deleting a definition ------------------------------------------------------------------


async def test_deleting_a_definition_removes_its_values(owner: User, engine: AsyncEngine) -> None:
    source = await define(owner, **SOURCE)
    await define(owner, key="notes", type="text")
    contact_id = await create_contact(owner)
    kept = await new_deal(owner, contact_id, custom_fields={"notes": "n"})
    touched = await new_deal(owner, contact_id, custom_fields={"source": "web", "notes": "m"})
    trashed = await new_deal(owner, contact_id, custom_fields={"source": "event"})
    assert (await owner.delete(f"/deals/{trashed['id']}")).status_code == 204
    # Cached: the list's total and first page for these filters.
    assert (await owner.get("/deals", params={"cf.notes": "m"})).json()["total"] == 1
    assert (await owner.get("/deals", params={"cf.source": "web"})).json()["total"] == 1

    assert (await owner.delete(f"/custom-fields/{source['id']}")).status_code == 204
    after = (await owner.get(f"/deals/{touched['id']}")).json()
    assert after["custom_fields"] == {"notes": "m"}
    assert after["updated_at"] != touched["updated_at"]
    assert (await owner.get(f"/deals/{kept['id']}")).json() == kept
    async with engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT custom_fields FROM deals WHERE id = :id"), {"id": trashed["id"]}
            )
        ).scalar_one()
    assert (json.loads(stored) if isinstance(stored, str) else stored) == {}

    # Defined again, it starts empty: no old value comes back, filters see none (the cached
    # total of the same filter is not served: the deletion moved the deals' version).
    await define(owner, **SOURCE)
    page = (await owner.get("/deals", params={"cf.source": "web"})).json()
    assert (page["total"], page["items"]) == (0, [])
    page = (await owner.get("/deals", params={"cf.notes": "m"})).json()
    assert page["total"] == 1
    assert page["items"][0]["custom_fields"] == {"notes": "m"}


async def test_deleting_a_contact_field_removes_its_values(owner: User) -> None:
    field = await define(owner, entity="contact", key="linkedin", type="text")
    response = await owner.post(
        "/contacts", json={"name": "Ann", "custom_fields": {"linkedin": "in/ann"}}
    )
    ann = response.json()
    assert (await owner.get("/contacts", params={"cf.linkedin": "in/ann"})).json()["total"] == 1
    assert (await owner.delete(f"/custom-fields/{field['id']}")).status_code == 204
    assert (await owner.get(f"/contacts/{ann['id']}")).json()["custom_fields"] == {}
    assert (await owner.get("/contacts")).json()["total"] == 1


# --- exports ---------------------------------------------------------------------------------


async def test_exports_carry_custom_fields(owner: User) -> None:
    await define(owner, **SOURCE)
    await define(owner, key="tags", type="multiselect", options=["a", "b"])
    await define(owner, key="budget", type="money")
    contact_id = await create_contact(owner)
    first = await new_deal(
        owner, contact_id, custom_fields={"source": "web", "tags": ["a", "b"], "budget": "5.50"}
    )
    await new_deal(owner, contact_id, custom_fields={"source": "event"})

    response = await owner.get("/deals/export", params={"cf.source": "web"})
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0])[-3:] == ["cf.source", "cf.tags", "cf.budget"]
    assert "custom_fields" not in rows[0]
    assert [row["id"] for row in rows] == [str(first["id"])]
    assert rows[0]["cf.tags"] == '["a","b"]'
    assert rows[0]["cf.budget"] == "5.5"

    response = await owner.get("/deals/export", params={"format": "jsonl", "cf.source": "web"})
    assert [json.loads(line) for line in response.text.splitlines()] == [first]
    response = await owner.get("/deals/export", params={"cf.nothing": "x"})
    assert_problem(response, 422, "VALIDATION_ERROR")


# --- PostgreSQL: the per-key index -----------------------------------------------------------


async def _indexes(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_%_cf_%'")
        )
        return {row[0] for row in rows}


async def _reconcile(engine: AsyncEngine, limit: int = 100) -> list[str]:
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        return await reconcile(autocommit, limit)


async def test_postgres_index_per_key_and_money_exact(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("per-key indexes exist on PostgreSQL only")
    await _reconcile(engine)  # what an earlier test on this database left, gone
    assert await _indexes(engine) == set()
    first = await define(owner, **SOURCE)
    assert await _indexes(engine) == set()  # not made by the request
    assert await _reconcile(engine) == ["created ix_deals_cf_source"]
    assert await _indexes(engine) == {"ix_deals_cf_source"}
    assert await _reconcile(engine) == []  # in step
    stranger = await api.register(organization_name="Elsewhere")
    second = await define(stranger, **SOURCE)
    await define(stranger, key="region", type="text")
    # At most `limit` indexes, those of the keys most organizations define first.
    assert await _reconcile(engine, limit=1) == []
    assert await _reconcile(engine, limit=2) == ["created ix_deals_cf_region"]
    assert await _reconcile(engine, limit=1) == ["dropped ix_deals_cf_region"]
    await owner.delete(f"/custom-fields/{first['id']}")
    # `source` still used elsewhere; `region` within the limit again.
    assert await _reconcile(engine) == ["created ix_deals_cf_region"]
    await stranger.delete(f"/custom-fields/{second['id']}")
    assert await _reconcile(engine) == ["dropped ix_deals_cf_source"]
    assert await _indexes(engine) == {"ix_deals_cf_region"}

    await define(owner, **SOURCE)
    await _reconcile(engine)
    # A build cut short leaves an invalid index, which no query uses: dropped and built again.
    async with engine.connect() as connection:
        await connection.execute(
            text(
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                "'ix_deals_cf_source'::regclass"
            )
        )
        await connection.commit()
    assert await _reconcile(engine) == [
        "dropped ix_deals_cf_source (invalid)",
        "created ix_deals_cf_source",
    ]
    await define(owner, key="budget", type="money")
    contact_id = await create_contact(owner)
    amounts = ["0.07", "1.15", "999999999999.99", "12.50"]
    for amount in amounts:
        await new_deal(owner, contact_id, custom_fields={"source": "web", "budget": amount})
    async with engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT (custom_fields -> 'budget')::numeric FROM deals ORDER BY id")
            )
        ).scalars()
        assert [str(value) for value in stored] == ["0.07", "1.15", "999999999999.99", "12.5"]
        await connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in await connection.execute(
                text(
                    "EXPLAIN SELECT id FROM deals WHERE organization_id = 1 "
                    "AND deleted_at IS NULL AND custom_fields ? 'source' "
                    "AND (custom_fields -> 'source') = '\"web\"'::jsonb "
                    "ORDER BY created_at DESC, id DESC LIMIT 20"
                )
            )
        )
    assert "ix_deals_cf_source" in plan


async def test_postgres_worker_keeps_the_indexes(
    owner: User, engine: AsyncEngine, database_url: str
) -> None:
    """The worker's own loop (a task beside the delivery loops) makes the index of a new key
    within its interval, and stops when told."""
    if engine.dialect.name != "postgresql":
        pytest.skip("per-key indexes exist on PostgreSQL only")
    await define(owner, **SOURCE)
    settings = make_settings(database_url, CUSTOM_FIELD_INDEX_INTERVAL_SECONDS=0.05)
    stop = asyncio.Event()
    keeper = asyncio.create_task(keep_custom_field_indexes(engine, settings, stop))
    try:
        for _ in range(200):
            if "ix_deals_cf_source" in await _indexes(engine):
                break
            await asyncio.sleep(0.05)
        assert "ix_deals_cf_source" in await _indexes(engine)
    finally:
        stop.set()
        await asyncio.wait_for(keeper, 5)


# --- imports ---------------------------------------------------------------------------------


async def test_imports_carry_custom_field_columns(owner: User) -> None:
    await define(owner, entity="contact", key="linkedin", type="text")
    await define(owner, entity="contact", key="vip", type="boolean")
    await define(owner, **SOURCE)
    await define(owner, key="tags", type="multiselect", options=["a", "b"])
    await define(owner, key="seats", type="number", required=True)
    contacts_csv = (
        "name,email,cf.linkedin,cf.vip\n"
        "Ann,ann@example.com,in/ann,true\n"
        "Bob,bob@example.com,,maybe\n"
        "Cid,cid@example.com,in/cid,\n"
    )
    body = await imported(owner, contacts_csv)
    assert (body["created"], body["failed"]) == (2, 1)
    assert errors_of(body) == [(2, "cf.vip", "VALIDATION_ERROR")]
    contacts = (await owner.get("/contacts", params={"order": "asc"})).json()["items"]
    assert [c["custom_fields"] for c in contacts] == [
        {"linkedin": "in/ann", "vip": True},
        {"linkedin": "in/cid"},
    ]
    # `on_conflict=update` merges the row's values like a PATCH.
    body = await imported(
        owner, "name,email,cf.vip\nAnn,ann@example.com,false\n", on_conflict="update"
    )
    assert body["updated"] == 1
    ann = (await owner.get(f"/contacts/{contacts[0]['id']}")).json()
    assert ann["custom_fields"] == {"linkedin": "in/ann", "vip": False}

    deals_csv = (
        "title,contact_email,cf.source,cf.tags,cf.seats\n"
        'One,ann@example.com,web,"[""a"",""b""]",3\n'
        "Two,ann@example.com,mail,,4\n"
        "Three,ann@example.com,event,b,\n"
        "Four,ann@example.com,event,b,2.5\n"
    )
    body = await imported(owner, deals_csv, kind="deals", filename="deals.csv")
    assert (body["created"], body["failed"]) == (2, 2)
    assert errors_of(body) == [
        (2, "cf.source", "VALIDATION_ERROR"),
        (3, "cf.seats", "VALIDATION_ERROR"),
    ]
    deals = (await owner.get("/deals", params={"order": "asc"})).json()["items"]
    assert [d["custom_fields"] for d in deals] == [
        {"source": "web", "tags": ["a", "b"], "seats": 3},
        {"source": "event", "tags": ["b"], "seats": 2.5},
    ]
    # An export imports back with its values.
    exported = (await owner.get("/deals/export")).text
    body = await imported(owner, exported, kind="deals", filename="deals.csv")
    assert (body["created"], body["failed"]) == (2, 0)
    again = (await owner.get("/deals", params={"order": "asc"})).json()["items"][2:]
    assert [d["custom_fields"] for d in again] == [d["custom_fields"] for d in deals]


async def test_at_most_100_fields_per_entity(owner: User) -> None:
    for n in range(100):
        await define(owner, entity="company", key=f"f{n}", type="boolean")
    response = await owner.post(
        "/custom-fields", json={"entity": "company", "key": "more", "label": "M", "type": "text"}
    )
    assert_problem(response, 409, "CUSTOM_FIELD_LIMIT_REACHED")
    await define(owner, entity="contact", key="more", type="text")  # another entity's own


async def test_postgres_an_option_removal_waits_for_a_write_holding_the_option(
    owner: User, engine: AsyncEngine
) -> None:
    """A record write share-locks the definitions it checks against until it commits: the
    removal of an option waits for it, then sees the value and refuses."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers whole)")
    source = await define(owner, **SOURCE)
    contact_id = await create_contact(owner)
    deal = await new_deal(owner, contact_id)
    async with engine.connect() as writer:
        # What a deal write does: lock the definitions, then store the checked value.
        await writer.execute(
            text("SELECT id FROM custom_field_definitions WHERE id = :id FOR SHARE"),
            {"id": source["id"]},
        )
        removal = asyncio.create_task(
            owner.patch(f"/custom-fields/{source['id']}", json={"options": ["web", "referral"]})
        )
        await asyncio.sleep(0.5)
        assert not removal.done()
        await writer.execute(
            text('UPDATE deals SET custom_fields = \'{"source": "event"}\' WHERE id = :id'),
            {"id": deal["id"]},
        )
        await writer.commit()
    assert_problem(await removal, 409, "CUSTOM_FIELD_OPTION_IN_USE")


# --- odd input, order, concurrency -------------------------------------------------------------


async def test_odd_values_and_filters_are_422_never_500(owner: User) -> None:
    await define(owner, key="n", type="number")
    await define(owner, key="t", type="text")
    contact_id = await create_contact(owner)
    for value, key in (
        (10**400, "n"),  # an integer no float holds
        (-(10**400), "n"),
        ("a\u0000b", "t"),  # PostgreSQL stores no NUL
        ("\ud800", "t"),  # a lone surrogate: not UTF-8
    ):
        body = {"contact_id": contact_id, "title": "D", "custom_fields": {key: value}}
        response = await owner.post(  # escaped: httpx would not encode a lone surrogate
            "/deals", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert invalid_keys(response) == [["body", "custom_fields", key]], value
    response = await owner.post(
        "/custom-fields",
        json={"entity": "deal", "key": "s", "label": "S", "type": "select", "options": ["a\u0000"]},
    )
    assert_problem(response, 422, "VALIDATION_ERROR")
    for name, value in (
        ("cf.t", "\u0000"),
        ("cf.n", "1_000"),
        ("cf.n", " 5 "),
        ("cf.n", "nan"),
        ("cf.n\n", "1"),
    ):
        response = await owner.get("/deals", params={name: value})
        assert_problem(response, 422, "VALIDATION_ERROR")
        response = await owner.get("/deals/export", params={name: value})
        assert_problem(response, 422, "VALIDATION_ERROR")
    assert await deal_ids(owner, **{"cf.n": "-0"}) == []  # a JSON number: accepted


async def test_an_unknown_order_is_one_error_as_before_custom_fields(owner: User) -> None:
    for path in ("/deals", "/contacts", "/companies"):
        body = assert_problem(await owner.get(path, params={"order_by": "bogus"}), 422)
        assert [error["loc"] for error in body["errors"]] == [["query", "order_by"]], path
        assert "cf.<key>" in body["errors"][0]["msg"]


async def test_required_values_are_not_empty_and_reordered_options_are_no_change(
    owner: User,
) -> None:
    await define(owner, key="note", type="text", required=True)
    tags = await define(owner, key="tags", type="multiselect", options=["a", "b"], required=True)
    contact_id = await create_contact(owner)
    for values in ({"note": "", "tags": ["a"]}, {"note": "x", "tags": []}):
        response = await owner.post(
            "/deals", json={"contact_id": contact_id, "title": "D", "custom_fields": values}
        )
        assert_problem(response, 422, "VALIDATION_ERROR")
    deal = await new_deal(owner, contact_id, custom_fields={"note": "x", "tags": ["b", "a"]})
    assert deal["custom_fields"]["tags"] == ["a", "b"]
    response = await owner.patch(f"/custom-fields/{tags['id']}", json={"options": ["b", "a"]})
    assert response.status_code == 200, response.text
    response = await owner.patch(
        f"/deals/{deal['id']}", json={"custom_fields": {"tags": ["a", "b"]}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["updated_at"] == deal["updated_at"]  # the same value: no write


async def test_postgres_a_definition_deleted_while_its_records_are_patched(
    owner: User, engine: AsyncEngine
) -> None:
    """Writes lock the definitions before their record, as a definition's deletion does: the
    two wait for each other (never a deadlock, answered 500)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers whole)")
    await define(owner, key="other", type="text")
    contact_id = await create_contact(owner)
    for _ in range(8):
        field = await define(owner, key="k", type="text")
        deal = await new_deal(owner, contact_id, custom_fields={"k": "v"})
        patch, delete = await asyncio.gather(
            owner.patch(f"/deals/{deal['id']}", json={"custom_fields": {"other": "x"}}),
            owner.delete(f"/custom-fields/{field['id']}"),
        )
        assert (patch.status_code, delete.status_code) == (200, 204), (patch.text, delete.text)
        response = await owner.get(f"/deals/{deal['id']}")
        assert response.json()["custom_fields"] == {"other": "x"}
