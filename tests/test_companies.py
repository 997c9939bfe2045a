"""Companies: CRUD, the list (paging, ordering, filters, Unicode search), their counts, the
delete rule, `company_id` on contacts and deals, events and who may change what."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, Team, User, assert_problem, count_rows, snapshot

COMPANY_KEYS = {
    "id",
    "organization_id",
    "owner_id",
    "name",
    "domain",
    "phone",
    "address",
    "contacts_count",
    "open_deals_count",
    "created_at",
    "updated_at",
    "custom_fields",  # section 17: {} without custom fields
}


async def create_company(user: User, name: str = "Acme", **fields: Any) -> dict[str, Any]:
    response = await user.post("/companies", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def read_company(user: User, company_id: int) -> dict[str, Any]:
    response = await user.get(f"/companies/{company_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def create(user: User, path: str, **body: Any) -> dict[str, Any]:
    response = await user.post(path, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def patch(user: User, path: str, **body: Any) -> dict[str, Any]:
    response = await user.patch(path, json=body)
    assert response.status_code == 200, response.text
    changed: dict[str, Any] = response.json()
    return changed


async def company_with_contact_and_deal(
    user: User,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A company, a contact of it, and a deal of that contact naming it."""
    company = await create_company(user)
    contact = await create(user, "/contacts", name="Ann", company_id=company["id"])
    deal = await create(
        user, "/deals", contact_id=contact["id"], title="Deal", company_id=company["id"]
    )
    return company, contact, deal


async def list_ids(user: User, path: str = "/companies", **params: Any) -> list[int]:
    response = await user.get(path, params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def feed(user: User) -> list[dict[str, Any]]:
    response = await user.get("/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def same_problem(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Two problem bodies alike but for the request id."""
    return {**first, "request_id": None} == {**second, "request_id": None}


# --- create / read / update / delete --------------------------------------------------------


async def test_create_company_belongs_to_the_caller_and_is_read_back(team: Team) -> None:
    response = await team.member.post(
        "/companies",
        json={
            "name": "  Acme Corporation ",
            "domain": " Acme.COM. ",
            "phone": "+1 415 555 0100",
            "address": "1 Market Street",
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == COMPANY_KEYS
    assert body["organization_id"] == team.owner.organization_id
    assert body["owner_id"] == team.member.id
    assert body["name"] == "Acme Corporation"
    assert body["domain"] == "acme.com"
    assert body["phone"] == "+1 415 555 0100"
    assert body["address"] == "1 Market Street"
    assert (body["contacts_count"], body["open_deals_count"]) == (0, 0)
    assert await read_company(team.owner, body["id"]) == body


async def test_create_with_only_a_name(owner: User) -> None:
    body = await create_company(owner, "Solo")
    assert (body["domain"], body["phone"], body["address"]) == (None, None, None)


INVALID_CREATE_BODIES: dict[str, Any] = {
    "no name": {"domain": "acme.com"},
    "blank name": {"name": "   "},
    "long name": {"name": "A" * 201},
    "url as domain": {"name": "Acme", "domain": "https://acme.com/"},
    "domain with a port": {"name": "Acme", "domain": "acme.com:8080"},
    "bare word as domain": {"name": "Acme", "domain": "localhost"},
    "address as domain": {"name": "Acme", "domain": "10.0.0.1"},
    "underscore in domain": {"name": "Acme", "domain": "ac_me.com"},
    "long address": {"name": "Acme", "address": "x" * 501},
    "owner in body": {"name": "Acme", "owner_id": 1},
    "unknown field": {"name": "Acme", "website": "acme.com"},
    "not an object": ["Acme"],
}


async def test_invalid_bodies_are_422_problems_and_write_nothing(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    company = await create_company(owner)
    before = await snapshot(engine)
    for case, body in INVALID_CREATE_BODIES.items():
        with subtests.test(f"POST {case}"):
            problem = assert_problem(await owner.post("/companies", json=body), 422)
            assert problem["code"] == "VALIDATION_ERROR"
            assert problem["errors"]
    for case, body in {
        "null name": {"name": None},
        "null owner": {"owner_id": None},
        "bad domain": {"domain": "not a domain"},
        "unknown field": {"website": "acme.com"},
    }.items():
        with subtests.test(f"PATCH {case}"):
            response = await owner.patch(f"/companies/{company['id']}", json=body)
            assert assert_problem(response, 422)["code"] == "VALIDATION_ERROR"
    assert await snapshot(engine) == before


async def test_read_missing_or_malformed_id(owner: User) -> None:
    assert_problem(await owner.get("/companies/987654321"), 404, "COMPANY_NOT_FOUND")
    assert_problem(await owner.get("/companies/abc"), 422)
    assert_problem(await owner.get("/companies/0"), 422)


async def test_patch_changes_only_the_fields_sent_and_null_clears(owner: User) -> None:
    company = await create_company(owner, domain="acme.com", phone="1", address="Here")

    renamed = await patch(owner, f"/companies/{company['id']}", name="Acme Inc", domain="ACME.io")
    assert renamed["name"] == "Acme Inc"
    assert renamed["domain"] == "acme.io"
    assert (renamed["phone"], renamed["address"]) == ("1", "Here")

    cleared = await patch(owner, f"/companies/{company['id']}", domain=None, address=None)
    assert (cleared["domain"], cleared["address"], cleared["phone"]) == (None, None, "1")
    assert await read_company(owner, company["id"]) == cleared


async def test_a_patch_that_changes_nothing_writes_nothing(
    owner: User, engine: AsyncEngine
) -> None:
    company = await create_company(owner, domain="acme.com")
    before = await snapshot(engine)

    same = await patch(owner, f"/companies/{company['id']}", name="Acme", domain="ACME.COM")

    assert same == company
    assert await snapshot(engine) == before


async def test_delete_company(owner: User, engine: AsyncEngine) -> None:
    company = await create_company(owner)

    response = await owner.delete(f"/companies/{company['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await owner.get(f"/companies/{company['id']}"), 404, "COMPANY_NOT_FOUND")
    assert await count_rows(engine, "companies") == 0  # no trash: gone for good
    assert_problem(await owner.delete(f"/companies/{company['id']}"), 404, "COMPANY_NOT_FOUND")


# --- the delete rule ------------------------------------------------------------------------


async def test_a_company_with_contacts_or_deals_cannot_be_deleted(
    owner: User, engine: AsyncEngine
) -> None:
    company, contact, deal = await company_with_contact_and_deal(owner)
    before = await snapshot(engine)

    assert_problem(await owner.delete(f"/companies/{company['id']}"), 409, "COMPANY_HAS_CONTACTS")
    assert await snapshot(engine) == before

    await patch(owner, f"/contacts/{contact['id']}", company_id=None)
    # A won or lost deal counts too: only open ones are in `open_deals_count`, but any deal
    # naming the company keeps it.
    await patch(owner, f"/deals/{deal['id']}", status="lost")
    before = await snapshot(engine)
    assert_problem(await owner.delete(f"/companies/{company['id']}"), 409, "COMPANY_HAS_DEALS")
    assert await snapshot(engine) == before

    await patch(owner, f"/deals/{deal['id']}", company_id=None)
    assert (await owner.delete(f"/companies/{company['id']}")).status_code == 204


async def test_records_in_the_trash_lose_a_deleted_company(
    owner: User, engine: AsyncEngine
) -> None:
    company, contact, deal = await company_with_contact_and_deal(owner)
    deal_before = (await owner.get(f"/deals/{deal['id']}")).json()
    assert (await owner.delete(f"/deals/{deal['id']}")).status_code == 204
    assert (await owner.delete(f"/contacts/{contact['id']}")).status_code == 204

    assert (await owner.delete(f"/companies/{company['id']}")).status_code == 204

    trash = (await owner.get("/trash")).json()["items"]
    assert {item["object"]["company_id"] for item in trash} == {None}
    restored_contact = (await owner.post(f"/contacts/{contact['id']}/restore")).json()
    assert restored_contact["company_id"] is None
    restored_deal = (await owner.post(f"/deals/{deal['id']}/restore")).json()
    assert restored_deal["company_id"] is None
    assert {k: v for k, v in restored_deal.items() if k not in ("company_id", "updated_at")} == {
        k: v for k, v in deal_before.items() if k not in ("company_id", "updated_at")
    }
    assert await count_rows(engine, "companies") == 0


# --- counts ---------------------------------------------------------------------------------


async def test_counts_of_live_contacts_and_open_deals(owner: User) -> None:
    company = await create_company(owner)
    other = await create_company(owner, "Other")
    path = f"/companies/{company['id']}"
    ann = await create(owner, "/contacts", name="Ann", company_id=company["id"])
    bob = await create(owner, "/contacts", name="Bob", company_id=company["id"])
    await create(owner, "/contacts", name="Cid", company_id=other["id"])
    await create(owner, "/contacts", name="Dee")
    new = await create(owner, "/deals", contact_id=ann["id"], title="N", company_id=company["id"])
    going = await create(owner, "/deals", contact_id=ann["id"], title="P", company_id=company["id"])
    won = await create(
        owner, "/deals", contact_id=bob["id"], title="W", company_id=company["id"], amount="10"
    )
    await create(owner, "/deals", contact_id=bob["id"], title="Else", company_id=other["id"])
    await create(owner, "/deals", contact_id=bob["id"], title="None")
    await patch(owner, f"/deals/{going['id']}", status="in_progress")
    await patch(owner, f"/deals/{won['id']}", status="won")

    shown = await read_company(owner, company["id"])
    assert (shown["contacts_count"], shown["open_deals_count"]) == (2, 2)

    # Records in the trash do not count, nor do deals that are won or lost.
    assert (await owner.delete(f"/deals/{new['id']}")).status_code == 204
    await patch(owner, f"/deals/{going['id']}", status="lost")
    await patch(owner, f"/contacts/{bob['id']}", company_id=None)
    shown = await read_company(owner, company["id"])
    assert (shown["contacts_count"], shown["open_deals_count"]) == (1, 0)

    # The list shows each company's own counts too.
    items = {c["id"]: c for c in (await owner.get("/companies")).json()["items"]}
    assert items[company["id"]] == shown
    assert (items[other["id"]]["contacts_count"], items[other["id"]]["open_deals_count"]) == (1, 1)
    assert (await owner.get(path)).json() == shown


async def test_etag_follows_the_counts(owner: User) -> None:
    company = await create_company(owner)
    path = f"/companies/{company['id']}"
    first = await owner.get(path)
    etag = first.headers["etag"]
    assert (await owner.get(path, headers={"If-None-Match": etag})).status_code == 304

    await create(owner, "/contacts", name="Ann", company_id=company["id"])

    second = await owner.get(path, headers={"If-None-Match": etag})
    assert second.status_code == 200
    assert second.json()["contacts_count"] == 1
    assert second.headers["etag"] != etag
    # A write sent with the tag the client saw before the contact joined is refused.
    stale = await owner.patch(path, json={"name": "Late"}, headers={"If-Match": etag})
    assert_problem(stale, 412, "PRECONDITION_FAILED")
    fresh = await owner.patch(
        path, json={"name": "Fresh"}, headers={"If-Match": second.headers["etag"]}
    )
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["etag"] == (await owner.get(path)).headers["etag"]
    stale_delete = await owner.delete(path, headers={"If-Match": second.headers["etag"]})
    assert_problem(stale_delete, 412, "PRECONDITION_FAILED")
    assert (await read_company(owner, company["id"]))["name"] == "Fresh"


# --- the list -------------------------------------------------------------------------------


async def test_list_envelope_paging_and_cursor_mode(owner: User) -> None:
    ids = [(await create_company(owner, f"Company {n}"))["id"] for n in range(5)]

    page = (await owner.get("/companies", params={"page": 2, "page_size": 2})).json()
    assert set(page) == {"items", "total", "page", "page_size", "pages"}
    assert (page["total"], page["page"], page["page_size"], page["pages"]) == (5, 2, 2, 3)
    assert [item["id"] for item in page["items"]] == ids[::-1][2:4]  # newest first
    assert_problem(await owner.get("/companies", params={"page_size": 101}), 422)
    assert_problem(await owner.get("/companies", params={"page": 0}), 422)

    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2, "order_by": "name", "order": "asc"}
    while True:
        body = (await owner.get("/companies", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == ids
    replayed = await owner.get(
        "/companies", params={"limit": 2, "cursor": params["cursor"], "order": "desc"}
    )
    assert_problem(replayed, 422, "INVALID_CURSOR")


async def test_ordering_with_id_tiebreak_and_owner_filter(team: Team) -> None:
    beta = (await create_company(team.owner, "Beta"))["id"]
    alpha = (await create_company(team.member, "Alpha"))["id"]
    beta_two = (await create_company(team.member, "Beta"))["id"]

    assert await list_ids(team.owner, order_by="name", order="asc") == [alpha, beta, beta_two]
    assert await list_ids(team.owner, order_by="name", order="desc") == [beta_two, beta, alpha]
    assert await list_ids(team.owner, order="asc") == [beta, alpha, beta_two]
    assert await list_ids(team.owner, owner_id=team.member.id, order="asc") == [alpha, beta_two]
    assert_problem(await team.owner.get("/companies", params={"order_by": "domain"}), 422)


async def test_search_name_and_domain_in_any_case_and_language(
    owner: User, subtests: pytest.Subtests
) -> None:
    muller = (await create_company(owner, "Müller GmbH", domain="mueller.de"))["id"]
    romashka = (await create_company(owner, "Ромашка Плюс"))["id"]
    acme = (await create_company(owner, "Acme", domain="acme-corp.com"))["id"]
    percent = (await create_company(owner, "100% Natural"))["id"]
    await create_company(owner, "Plain", phone="+1 555 0100", address="Müller street")

    expected = {
        "MÜLLER": [muller],
        "müller gmbh": [muller],
        "MUELLER.DE": [muller],
        "ромашка": [romashka],
        "РОМАШКА": [romashka],
        "ACME-CORP": [acme],
        "corp.com": [acme],
        "%": [percent],
        "0100": [],  # phone and address are not searched
        "nobody": [],
    }
    for search, ids in expected.items():
        with subtests.test(search=search):
            assert await list_ids(owner, search=search, order="asc") == ids
    total = (await owner.get("/companies", params={"search": "müller"})).json()["total"]
    assert total == 1


async def test_search_follows_updates(owner: User) -> None:
    company = await create_company(owner, "Ромашка", domain="romashka.ru")
    await patch(owner, f"/companies/{company['id']}", name="Василёк", domain=None)

    assert await list_ids(owner, search="ромашка") == []
    assert await list_ids(owner, search="romashka") == []
    assert await list_ids(owner, search="ВАСИЛЁК") == [company["id"]]


# --- company_id on contacts and deals -------------------------------------------------------


async def test_contacts_belong_to_a_company_set_cleared_and_filtered(owner: User) -> None:
    acme = await create_company(owner, "Acme")
    globex = await create_company(owner, "Globex")

    ann = await create(owner, "/contacts", name="Ann", company_id=acme["id"])
    assert ann["company_id"] == acme["id"]
    bob = await create(owner, "/contacts", name="Bob")
    assert bob["company_id"] is None
    moved = await patch(owner, f"/contacts/{bob['id']}", company_id=globex["id"])
    assert moved["company_id"] == globex["id"]
    assert (await owner.get(f"/contacts/{bob['id']}")).json() == moved

    assert await list_ids(owner, "/contacts", company_id=acme["id"]) == [ann["id"]]
    assert await list_ids(owner, "/contacts", company_id=globex["id"]) == [bob["id"]]
    page = (await owner.get("/contacts", params={"company_id": acme["id"]})).json()
    assert page["total"] == 1

    export = await owner.get(
        "/contacts/export", params={"company_id": globex["id"], "format": "jsonl"}
    )
    assert [json.loads(line) for line in export.text.splitlines()] == [moved]

    cleared = await patch(owner, f"/contacts/{ann['id']}", company_id=None)
    assert cleared["company_id"] is None
    assert await list_ids(owner, "/contacts", company_id=acme["id"]) == []
    assert (await owner.get("/contacts", params={"company_id": acme["id"]})).json()["total"] == 0


async def test_deals_name_a_company_set_cleared_and_filtered(owner: User) -> None:
    acme = await create_company(owner, "Acme")
    contact = await create(owner, "/contacts", name="Ann")

    named = await create(
        owner, "/deals", contact_id=contact["id"], title="Named", company_id=acme["id"]
    )
    plain = await create(owner, "/deals", contact_id=contact["id"], title="Plain")
    assert (named["company_id"], plain["company_id"]) == (acme["id"], None)
    assert (await owner.get(f"/deals/{named['id']}")).json() == named

    assert await list_ids(owner, "/deals", company_id=acme["id"]) == [named["id"]]
    moved = await patch(owner, f"/deals/{plain['id']}", company_id=acme["id"])
    assert moved["company_id"] == acme["id"]
    assert (await owner.get("/deals", params={"company_id": acme["id"]})).json()["total"] == 2
    cleared = await patch(owner, f"/deals/{named['id']}", company_id=None)
    assert cleared["company_id"] is None
    assert await list_ids(owner, "/deals", company_id=acme["id"]) == [plain["id"]]
    assert (await owner.get("/deals", params={"company_id": acme["id"]})).json()["total"] == 1


async def test_a_merge_fills_the_targets_empty_company_and_keeps_its_own(owner: User) -> None:
    acme = await create_company(owner, "Acme")
    globex = await create_company(owner, "Globex")
    target = await create(owner, "/contacts", name="Ann")
    first = await create(owner, "/contacts", name="Ann L.", company_id=acme["id"])
    second = await create(owner, "/contacts", name="A. Lee", company_id=globex["id"])

    response = await owner.post(
        f"/contacts/{target['id']}/merge", json={"source_ids": [first["id"], second["id"]]}
    )

    assert response.status_code == 200, response.text
    assert response.json()["filled_fields"] == ["company_id"]
    assert response.json()["contact"]["company_id"] == acme["id"]
    assert (await read_company(owner, acme["id"]))["contacts_count"] == 1
    assert (await read_company(owner, globex["id"]))["contacts_count"] == 0
    other = await create(owner, "/contacts", name="Ann again", company_id=globex["id"])
    again = await owner.post(f"/contacts/{target['id']}/merge", json={"source_ids": [other["id"]]})
    assert again.json()["filled_fields"] == []
    assert again.json()["contact"]["company_id"] == acme["id"]


async def test_another_organizations_company_is_refused_like_a_missing_one(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    stranger = await api.register(organization_name="Elsewhere")
    theirs = await create_company(stranger, "Theirs")
    contact = await create(owner, "/contacts", name="Ann")
    deal = await create(owner, "/deals", contact_id=contact["id"], title="Deal")
    missing = theirs["id"] + 1000
    before = await snapshot(engine)

    requests = {
        "new contact": lambda company_id: owner.post(
            "/contacts", json={"name": "Bob", "company_id": company_id}
        ),
        "contact": lambda company_id: owner.patch(
            f"/contacts/{contact['id']}", json={"company_id": company_id}
        ),
        "new deal": lambda company_id: owner.post(
            "/deals", json={"contact_id": contact["id"], "title": "D", "company_id": company_id}
        ),
        "deal": lambda company_id: owner.patch(
            f"/deals/{deal['id']}", json={"company_id": company_id}
        ),
    }
    for name, send in requests.items():
        foreign = assert_problem(await send(theirs["id"]), 400, "COMPANY_NOT_FOUND")
        absent = assert_problem(await send(missing), 400, "COMPANY_NOT_FOUND")
        assert same_problem(foreign, absent), name
    for method in ("get", "patch", "delete"):
        call = getattr(owner, method)
        kwargs = {"json": {"name": "Mine"}} if method == "patch" else {}
        foreign = assert_problem(await call(f"/companies/{theirs['id']}", **kwargs), 404)
        absent = assert_problem(await call(f"/companies/{missing}", **kwargs), 404)
        assert foreign["code"] == "COMPANY_NOT_FOUND"
        assert same_problem(foreign, absent), method
    assert await list_ids(owner) == []
    assert await list_ids(owner, "/contacts", company_id=theirs["id"]) == []
    assert await snapshot(engine) == before
    assert (await read_company(stranger, theirs["id"]))["contacts_count"] == 0


async def test_a_client_that_ignores_companies_sees_only_a_null_company_id(owner: User) -> None:
    contact = await create(owner, "/contacts", name="Ann")
    deal = await create(owner, "/deals", contact_id=contact["id"], title="Deal")
    assert contact["company_id"] is None
    assert deal["company_id"] is None

    contacts = (await owner.get("/contacts")).json()["items"]
    deals = (await owner.get("/deals")).json()["items"]
    assert [c["company_id"] for c in contacts] == [None]
    assert [d["company_id"] for d in deals] == [None]
    export = await owner.get("/contacts/export")
    header, row = export.text.splitlines()[:2]
    assert header.split(",")[-1] == "company_id"
    assert row.endswith(",")  # an empty cell
    export = await owner.get("/deals/export", params={"format": "jsonl"})
    assert export.text.splitlines()[0].endswith('"company_id":null,"custom_fields":{}}')


# --- events ---------------------------------------------------------------------------------


async def test_company_writes_append_events_with_actor_and_changes(team: Team) -> None:
    owner, member = team.owner, team.member
    start = len(await feed(owner))

    company = await create_company(member, "Acme", domain="acme.com")
    renamed = await patch(member, f"/companies/{company['id']}", name="Acme Inc", domain=None)
    await patch(member, f"/companies/{company['id']}", name="Acme Inc")  # no change: no event
    contact = await create(owner, "/contacts", name="Ann", company_id=company["id"])
    await patch(owner, f"/contacts/{contact['id']}", company_id=None)
    shown = await read_company(owner, company["id"])
    assert (await member.delete(f"/companies/{company['id']}")).status_code == 204

    events = (await feed(owner))[start:]
    assert [event["type"] for event in events] == [
        "company.created",
        "company.updated",
        "contact.created",
        "contact.updated",
        "company.deleted",
    ]
    created, updated, _, contact_updated, deleted = events
    member_actor = {"type": "user", "id": member.id}
    assert created["actor"] == member_actor
    assert created["data"]["object"] == company
    assert updated["actor"] == member_actor
    assert updated["data"]["object"] == renamed
    assert updated["data"]["changes"] == {
        "name": ["Acme", "Acme Inc"],
        "domain": ["acme.com", None],
    }
    assert contact_updated["data"]["changes"] == {"company_id": [company["id"], None]}
    assert deleted["actor"] == member_actor
    assert deleted["data"]["object"] == shown
    filtered = await owner.get("/events", params={"types": "company.*"})
    assert [e["type"] for e in filtered.json()["items"]] == [
        "company.created",
        "company.updated",
        "company.deleted",
    ]


async def test_refused_company_writes_append_no_event(owner: User, engine: AsyncEngine) -> None:
    company = await create_company(owner)
    await create(owner, "/contacts", name="Ann", company_id=company["id"])
    events_before = await count_rows(engine, "events")

    assert_problem(await owner.delete(f"/companies/{company['id']}"), 409)
    assert_problem(await owner.patch(f"/companies/{company['id']}", json={"domain": "x"}), 422)
    assert_problem(
        await owner.post("/contacts", json={"name": "B", "company_id": company["id"] + 1}), 400
    )

    assert await count_rows(engine, "events") == events_before


# --- who may change what --------------------------------------------------------------------


async def test_members_change_only_their_own_companies(team: Team, engine: AsyncEngine) -> None:
    theirs = await create_company(team.owner, "Owner's")
    mine = await create_company(team.member, "Member's")
    before = await snapshot(engine)

    refused = await team.member.patch(f"/companies/{theirs['id']}", json={"name": "Taken"})
    assert_problem(refused, 403, "PERMISSION_DENIED")
    assert_problem(await team.member.delete(f"/companies/{theirs['id']}"), 403, "PERMISSION_DENIED")
    reassign = await team.member.patch(f"/companies/{mine['id']}", json={"owner_id": team.owner.id})
    assert_problem(reassign, 403, "PERMISSION_DENIED")
    assert await snapshot(engine) == before

    assert (await patch(team.member, f"/companies/{mine['id']}", name="Mine"))["name"] == "Mine"
    assert (await team.member.delete(f"/companies/{mine['id']}")).status_code == 204


@pytest.mark.parametrize("role", ["owner", "admin", "manager"])
async def test_managers_and_above_change_and_reassign_any_company(
    api: Api, team: Team, role: str
) -> None:
    user = team.by_role(role)
    company = await create_company(team.member, "Member's")

    reassigned = await patch(user, f"/companies/{company['id']}", owner_id=team.admin.id)
    assert reassigned["owner_id"] == team.admin.id
    stranger = await api.register(organization_name="Elsewhere")
    outside = await user.patch(f"/companies/{company['id']}", json={"owner_id": stranger.id})
    assert_problem(outside, 400, "OWNER_NOT_A_MEMBER")
    assert (await user.delete(f"/companies/{company['id']}")).status_code == 204


async def test_a_contacts_company_is_the_contacts_owners_to_change(team: Team) -> None:
    """Putting a contact in a company is a change of the contact: its rules, not the
    company's (a member may put their own contact in anyone's company)."""
    company = await create_company(team.owner, "Owner's")
    mine = await create(team.member, "/contacts", name="Mine")
    theirs = await create(team.owner, "/contacts", name="Theirs")

    joined = await patch(team.member, f"/contacts/{mine['id']}", company_id=company["id"])
    assert joined["company_id"] == company["id"]
    refused = await team.member.patch(
        f"/contacts/{theirs['id']}", json={"company_id": company["id"]}
    )
    assert_problem(refused, 403, "PERMISSION_DENIED")


# --- concurrency ----------------------------------------------------------------------------


async def race_company_delete_against_joining(api: Api) -> None:
    """A company deleted while a contact is created in it, a deal names it, one of its
    contacts goes to the trash, or a contact in the trash that belonged to it is restored:
    either the delete wins (the other request finds no company, or the contact is trashed or
    restored without one) or the other does (the delete is 409). Never a record naming a
    deleted company, never a 500."""
    owner = await api.register(organization_name="Race")
    engine: AsyncEngine = api.app.state.resources.engine
    contact = await create(owner, "/contacts", name="Standing")
    outcomes: set[tuple[str, int, int]] = set()
    for round_ in range(12):
        company = await create_company(owner, f"Contested {round_}")
        kind = ("contact", "deal", "restore", "trash")[round_ % 4]
        if kind == "contact":
            other = owner.post("/contacts", json={"name": "New", "company_id": company["id"]})
        elif kind == "deal":
            body = {"contact_id": contact["id"], "title": "New", "company_id": company["id"]}
            other = owner.post("/deals", json=body)
        elif kind == "restore":
            trashed = await create(owner, "/contacts", name="Old", company_id=company["id"])
            assert (await owner.delete(f"/contacts/{trashed['id']}")).status_code == 204
            other = owner.post(f"/contacts/{trashed['id']}/restore")
        else:
            leaving = await create(owner, "/contacts", name="Leaving", company_id=company["id"])
            other = owner.delete(f"/contacts/{leaving['id']}")
        deleting = owner.delete(f"/companies/{company['id']}")
        deleted, joined = await asyncio.gather(deleting, other)
        outcomes.add((kind, deleted.status_code, joined.status_code))
        if kind == "trash":
            assert joined.status_code == 204, joined.text
            assert deleted.status_code in (204, 409), deleted.text
            if deleted.status_code == 409:
                assert_problem(deleted, 409, "COMPANY_HAS_CONTACTS")
        elif deleted.status_code == 204:
            if kind == "restore":
                assert joined.status_code == 200, joined.text
                assert joined.json()["company_id"] is None
            else:
                assert_problem(joined, 400, "COMPANY_NOT_FOUND")
        else:
            assert deleted.status_code == 409, deleted.text
            assert joined.status_code in (200, 201), joined.text
            assert joined.json()["company_id"] == company["id"]
    dangling = await count_rows(
        engine,
        "contacts",
        "company_id IS NOT NULL AND company_id NOT IN (SELECT id FROM companies)",
    )
    assert dangling == 0
    assert {status for _, status, _ in outcomes} <= {204, 409}


async def test_concurrent_company_delete_and_joining(api: Api) -> None:
    await race_company_delete_against_joining(api)


async def test_concurrent_company_delete_and_joining_on_postgresql(pg_api: Api) -> None:
    await race_company_delete_against_joining(pg_api)
