"""Contacts: CRUD, the list (paging, ordering, filters, Unicode search) and who may change what."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, Team, User, assert_problem, count_live, count_rows, count_trashed

CONTACT_KEYS = {
    "id",
    "organization_id",
    "owner_id",
    "name",
    "email",
    "phone",
    "created_at",
    "updated_at",
    "company_id",  # section 17: null for a client that ignores companies
    "custom_fields",  # section 17: {} for a client that ignores custom fields
}
PAGE_KEYS = {"items", "total", "page", "page_size", "pages"}
MANAGING_ROLES = ("owner", "admin", "manager")


async def create_contact(user: User, name: str = "Ann Lee", **fields: Any) -> dict[str, Any]:
    response = await user.post("/contacts", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def read_contact(user: User, contact_id: int) -> dict[str, Any]:
    response = await user.get(f"/contacts/{contact_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def list_ids(user: User, **params: Any) -> list[int]:
    response = await user.get("/contacts", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def assert_contact_unchanged(
    engine: AsyncEngine, reader: User, before: dict[str, Any]
) -> None:
    assert await read_contact(reader, before["id"]) == before
    assert await count_rows(engine, "activities") == 0


def assert_timestamp(value: str) -> None:
    assert datetime.fromisoformat(value).utcoffset() is not None, value


# --- create / read / update / delete ------------------------------------------------------


async def test_create_contact_belongs_to_the_caller_and_header_organization(
    api: Api, team: Team
) -> None:
    response = await team.member.post(
        "/contacts", json={"name": "  Ann Lee  ", "email": "ann@example.com", "phone": "+1 555"}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CONTACT_KEYS
    assert body["organization_id"] == team.owner.organization_id
    assert body["owner_id"] == team.member.id
    assert body["name"] == "Ann Lee"
    assert body["email"] == "ann@example.com"
    assert body["phone"] == "+1 555"
    assert_timestamp(body["created_at"])
    assert_timestamp(body["updated_at"])
    assert await read_contact(team.owner, body["id"]) == body


async def test_create_contact_with_only_a_name(owner: User) -> None:
    body = await create_contact(owner, "Solo")

    assert body["email"] is None
    assert body["phone"] is None
    assert body["owner_id"] == owner.id


INVALID_CREATE_BODIES: dict[str, Any] = {
    "organization_id": {"name": "Ann", "organization_id": 1},
    "owner_id": {"name": "Ann", "owner_id": 1},
    "id": {"name": "Ann", "id": 5},
    "created_at": {"name": "Ann", "created_at": "2024-01-01T00:00:00Z"},
    "unknown field": {"name": "Ann", "nickname": "A"},
    "no name": {},
    "null name": {"name": None},
    "empty name": {"name": ""},
    "blank name": {"name": "   "},
    "long name": {"name": "A" * 201},
    "bad email": {"name": "Ann", "email": "not-an-email"},
    "not an object": ["Ann"],
}


async def test_create_contact_rejects_invalid_bodies_and_creates_nothing(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for case, body in INVALID_CREATE_BODIES.items():
        with subtests.test(case):
            before = await count_rows(engine, "contacts")

            response = await owner.post("/contacts", json=body)

            problem = assert_problem(response, 422, "VALIDATION_ERROR")
            assert problem["errors"]
            assert await count_rows(engine, "contacts") == before


async def test_read_missing_contact_is_404(owner: User) -> None:
    assert_problem(await owner.get("/contacts/987654321"), 404, "CONTACT_NOT_FOUND")


async def test_read_contact_with_invalid_id_is_422(owner: User) -> None:
    assert_problem(await owner.get("/contacts/abc"), 422)
    assert_problem(await owner.get("/contacts/0"), 422)


async def test_patch_changes_only_the_fields_sent(owner: User) -> None:
    contact = await create_contact(owner, "Ann", email="ann@example.com", phone="111")

    response = await owner.patch(f"/contacts/{contact['id']}", json={"phone": "222"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["phone"] == "222"
    assert body["name"] == "Ann"
    assert body["email"] == "ann@example.com"
    assert body["owner_id"] == contact["owner_id"]
    assert body["created_at"] == contact["created_at"]
    assert datetime.fromisoformat(body["updated_at"]) >= datetime.fromisoformat(
        contact["updated_at"]
    )
    assert await read_contact(owner, contact["id"]) == body


async def test_patch_can_clear_email_and_phone(owner: User) -> None:
    contact = await create_contact(owner, "Ann", email="ann@example.com", phone="111")

    response = await owner.patch(f"/contacts/{contact['id']}", json={"email": None, "phone": None})

    assert response.status_code == 200, response.text
    stored = await read_contact(owner, contact["id"])
    assert stored["email"] is None
    assert stored["phone"] is None
    assert stored["name"] == "Ann"


INVALID_PATCH_BODIES: dict[str, Any] = {
    "null name": {"name": None},
    "blank name": {"name": "  "},
    "null owner": {"owner_id": None},
    "bad email": {"email": "nope"},
    "organization_id": {"organization_id": 2},
    "created_at": {"created_at": "2024-01-01T00:00:00Z"},
    "unknown field": {"nickname": "A"},
}


async def test_patch_rejects_invalid_bodies_and_changes_nothing(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for case, body in INVALID_PATCH_BODIES.items():
        with subtests.test(case):
            contact = await create_contact(owner, "Ann", email="ann@example.com")

            response = await owner.patch(f"/contacts/{contact['id']}", json=body)

            assert_problem(response, 422, "VALIDATION_ERROR")
            await assert_contact_unchanged(engine, owner, contact)


async def test_delete_contact(owner: User, engine: AsyncEngine) -> None:
    contact = await create_contact(owner)

    response = await owner.delete(f"/contacts/{contact['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await owner.get(f"/contacts/{contact['id']}"), 404, "CONTACT_NOT_FOUND")
    assert await count_live(engine, "contacts") == 0
    assert await count_trashed(engine, "contacts") == 1  # in the trash, restorable
    assert_problem(await owner.delete(f"/contacts/{contact['id']}"), 404, "CONTACT_NOT_FOUND")


async def test_contact_referenced_by_a_deal_cannot_be_deleted(
    owner: User, engine: AsyncEngine
) -> None:
    contact = await create_contact(owner)
    deal = await owner.post("/deals", json={"contact_id": contact["id"], "title": "Deal"})
    assert deal.status_code == 201, deal.text

    response = await owner.delete(f"/contacts/{contact['id']}")

    assert_problem(response, 409, "CONTACT_HAS_DEALS")
    assert await read_contact(owner, contact["id"]) == contact
    assert await count_rows(engine, "contacts", "id = :id", id=contact["id"]) == 1
    assert await count_rows(engine, "deals", "contact_id = :id", id=contact["id"]) == 1

    # Once the deal is gone (in the trash), so is the reason to refuse.
    assert (await owner.delete(f"/deals/{deal.json()['id']}")).status_code == 204
    assert (await owner.delete(f"/contacts/{contact['id']}")).status_code == 204


# --- the list ------------------------------------------------------------------------------


async def test_list_envelope_and_paging(owner: User) -> None:
    ids = [(await create_contact(owner, f"Contact {n}"))["id"] for n in range(3)]

    first = await owner.get("/contacts", params={"page_size": 2})
    second = await owner.get("/contacts", params={"page_size": 2, "page": 2})
    beyond = await owner.get("/contacts", params={"page_size": 2, "page": 3})
    default = await owner.get("/contacts")

    assert first.status_code == second.status_code == beyond.status_code == 200
    assert set(first.json()) == PAGE_KEYS
    assert {k: v for k, v in first.json().items() if k != "items"} == {
        "total": 3,
        "page": 1,
        "page_size": 2,
        "pages": 2,
    }
    # Default order is newest first.
    assert [c["id"] for c in first.json()["items"]] == [ids[2], ids[1]]
    assert [c["id"] for c in second.json()["items"]] == [ids[0]]
    assert second.json()["page"] == 2
    assert beyond.json()["items"] == []
    assert beyond.json()["total"] == 3
    assert default.json()["page"] == 1
    assert default.json()["page_size"] == 20
    assert default.json()["pages"] == 1
    assert set(default.json()["items"][0]) == CONTACT_KEYS


async def test_empty_list_has_zero_pages(owner: User) -> None:
    response = await owner.get("/contacts")

    assert response.status_code == 200
    assert response.json() == {"items": [], "total": 0, "page": 1, "page_size": 20, "pages": 0}


INVALID_LIST_QUERIES: list[dict[str, Any]] = [
    {"page": 0},
    {"page": -1},
    {"page": "one"},
    {"page_size": 0},
    {"page_size": 101},
    {"page_size": "x"},
    {"order_by": "email"},
    {"order": "sideways"},
    {"owner_id": 0},
    {"owner_id": "me"},
]


async def test_list_rejects_out_of_range_query(owner: User, subtests: pytest.Subtests) -> None:
    for params in INVALID_LIST_QUERIES:
        with subtests.test(str(params)):
            response = await owner.get("/contacts", params=params)
            assert_problem(response, 422, "VALIDATION_ERROR")

    for page_size in (1, 100):  # the bounds themselves are allowed
        response = await owner.get("/contacts", params={"page_size": page_size})
        assert response.status_code == 200, response.text
        assert response.json()["page_size"] == page_size


async def test_ordering_by_created_at_and_name_with_id_tiebreak(
    owner: User, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    first = (await create_contact(owner, "Bravo"))["id"]
    alpha = (await create_contact(owner, "Alpha"))["id"]
    second = (await create_contact(owner, "Bravo"))["id"]
    charlie = (await create_contact(owner, "Charlie"))["id"]
    # Give the first contact the same created_at as the last one: a tie that only `id` breaks
    # (and a rewritten row, so PostgreSQL's physical order no longer matches id order).
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE contacts SET created_at = "
                "(SELECT created_at FROM contacts WHERE id = :src) WHERE id = :dst"
            ),
            {"src": charlie, "dst": first},
        )

    expected = {
        ("created_at", "asc"): [alpha, second, first, charlie],
        ("created_at", "desc"): [charlie, first, second, alpha],
        ("name", "asc"): [alpha, first, second, charlie],
        ("name", "desc"): [charlie, second, first, alpha],
    }
    for (order_by, order), ids in expected.items():
        with subtests.test(order_by=order_by, order=order):
            assert await list_ids(owner, order_by=order_by, order=order) == ids
            # Walking page by page gives the same, stable order.
            paged = [
                (await list_ids(owner, order_by=order_by, order=order, page=p, page_size=1))[0]
                for p in range(1, 5)
            ]
            assert paged == ids
    assert await list_ids(owner) == expected[("created_at", "desc")]
    assert await list_ids(owner, order_by="name") == expected[("name", "desc")]


async def test_filter_by_owner(team: Team) -> None:
    mine = [(await create_contact(team.owner, f"Owner {n}"))["id"] for n in range(2)]
    theirs = (await create_contact(team.member, "Member's"))["id"]

    assert await list_ids(team.owner, owner_id=team.member.id, order="asc") == [theirs]
    assert await list_ids(team.owner, owner_id=team.owner.id, order="asc") == mine
    assert await list_ids(team.owner, owner_id=team.admin.id) == []
    response = await team.owner.get("/contacts", params={"owner_id": team.member.id})
    assert response.json()["total"] == 1


async def test_search_is_case_insensitive_for_any_language_and_literal(
    owner: User, subtests: pytest.Subtests
) -> None:
    ivan = (await create_contact(owner, "Иван Петров"))["id"]
    muller = (await create_contact(owner, "Hans Müller"))["id"]
    by_email = (await create_contact(owner, "Jane Roe", email="point@corp.example"))["id"]
    by_phone = (await create_contact(owner, "Tom Ray", phone="+1 (202) 555-0199"))["id"]
    percent = (await create_contact(owner, "100% Legit"))["id"]
    underscore = (await create_contact(owner, "under_score"))["id"]
    await create_contact(owner, "Plain Person", email="plain@example.com", phone="12345")

    expected = {
        "иван": [ivan],
        "ИВАН": [ivan],
        "ПЕТРОВ": [ivan],
        "петров": [ivan],
        "MÜLLER": [muller],
        "müller": [muller],
        "POINT@CORP": [by_email],
        "corp.example": [by_email],
        "555-01": [by_phone],
        "(202)": [by_phone],
        "%": [percent],
        "0%": [percent],
        "_": [underscore],
        "r_s": [underscore],
        "nobody": [],
    }
    for search, ids in expected.items():
        with subtests.test(search=search):
            assert await list_ids(owner, search=search, order="asc") == ids


async def test_search_follows_updates(owner: User) -> None:
    contact = await create_contact(owner, "Ольга Смирнова", email="olga@example.com")

    await owner.patch(f"/contacts/{contact['id']}", json={"name": "Ольга Кузнецова"})

    assert await list_ids(owner, search="смирнова") == []
    assert await list_ids(owner, search="КУЗНЕЦОВА") == [contact["id"]]
    await owner.patch(f"/contacts/{contact['id']}", json={"email": None})
    assert await list_ids(owner, search="olga@") == []


async def test_longest_valid_fields_are_stored_even_when_case_folding_expands_them(
    owner: User, subtests: pytest.Subtests
) -> None:
    """Case-folding can make text longer ('ß' -> 'ss', 'ﷺ' -> 18 letters); valid input must
    still be stored (not a 500) and be findable."""
    email = "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com"
    cases: dict[str, dict[str, Any]] = {
        "ß x 200 with the longest email and phone": {
            "name": "ß" * 200,
            "email": email,
            "phone": "1" * 50,
        },
        "ﷺ x 40": {"name": "\ufdfa" * 40},
    }
    for case, body in cases.items():
        with subtests.test(case):
            response = await owner.post("/contacts", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["name"] == body["name"]
            assert response.json()["id"] in await list_ids(owner, search=body["name"][:3])
    with subtests.test("patch"):
        contact = await create_contact(owner, "Short", email=email)
        response = await owner.patch(f"/contacts/{contact['id']}", json={"name": "ß" * 200})
        assert response.status_code == 200, response.text
        assert (await read_contact(owner, contact["id"]))["name"] == "ß" * 200


# --- roles ---------------------------------------------------------------------------------


async def test_member_may_update_and_delete_own_contact(team: Team) -> None:
    contact = await create_contact(team.member, "Mine")

    patched = await team.member.patch(f"/contacts/{contact['id']}", json={"name": "Still mine"})
    assert patched.status_code == 200, patched.text
    assert (await read_contact(team.owner, contact["id"]))["name"] == "Still mine"

    assert (await team.member.delete(f"/contacts/{contact['id']}")).status_code == 204
    assert_problem(await team.owner.get(f"/contacts/{contact['id']}"), 404)


async def test_member_may_not_update_or_delete_anothers_contact(
    team: Team, engine: AsyncEngine
) -> None:
    contact = await create_contact(team.manager, "Not yours", email="x@example.com")

    patched = await team.member.patch(f"/contacts/{contact['id']}", json={"name": "Stolen"})
    assert_problem(patched, 403)
    await assert_contact_unchanged(engine, team.owner, contact)

    deleted = await team.member.delete(f"/contacts/{contact['id']}")
    assert_problem(deleted, 403)
    await assert_contact_unchanged(engine, team.owner, contact)


async def test_manager_and_above_may_update_and_delete_anyones_contact(
    team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for role in MANAGING_ROLES:
        with subtests.test(role):
            actor = team.by_role(role)
            contact = await create_contact(team.member, "Member's", email="m@example.com")

            patched = await actor.patch(f"/contacts/{contact['id']}", json={"name": "Renamed"})

            assert patched.status_code == 200, patched.text
            stored = await read_contact(team.member, contact["id"])
            assert stored["name"] == "Renamed"
            assert stored["owner_id"] == team.member.id
            assert stored["email"] == "m@example.com"

            assert (await actor.delete(f"/contacts/{contact['id']}")).status_code == 204
            assert await count_live(engine, "contacts", "id = :id", id=contact["id"]) == 0


async def test_member_may_not_reassign_owner(team: Team, engine: AsyncEngine) -> None:
    contact = await create_contact(team.member, "Mine")

    response = await team.member.patch(
        f"/contacts/{contact['id']}", json={"owner_id": team.manager.id}
    )

    assert_problem(response, 403)
    await assert_contact_unchanged(engine, team.owner, contact)


async def test_manager_and_above_reassign_owner_to_a_member(
    team: Team, subtests: pytest.Subtests
) -> None:
    for role in MANAGING_ROLES:
        with subtests.test(role):
            contact = await create_contact(team.owner, "Handover")

            response = await team.by_role(role).patch(
                f"/contacts/{contact['id']}", json={"owner_id": team.member.id}
            )

            assert response.status_code == 200, response.text
            assert response.json()["owner_id"] == team.member.id
            assert (await read_contact(team.owner, contact["id"]))["owner_id"] == team.member.id
            # The new owner, a plain member, may now change it.
            renamed = await team.member.patch(
                f"/contacts/{contact['id']}", json={"name": "Mine now"}
            )
            assert renamed.status_code == 200, renamed.text


async def test_reassigning_owner_to_a_non_member_is_400(
    api: Api, team: Team, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    outsider = await api.register(organization_name="Elsewhere")
    contact = await create_contact(team.member, "Stays put")

    for role in MANAGING_ROLES:
        for owner_id in (outsider.id, 987654321):
            with subtests.test(role=role, owner_id=owner_id):
                response = await team.by_role(role).patch(
                    f"/contacts/{contact['id']}", json={"owner_id": owner_id}
                )
                assert_problem(response, 400, "OWNER_NOT_A_MEMBER")
                await assert_contact_unchanged(engine, team.owner, contact)


# --- concurrency (PostgreSQL) --------------------------------------------------------------


async def race_contact_delete_against_deal_create(api: Api) -> None:
    """Either the delete wins (the create gets 400) or the create wins (the delete gets 409):
    never a deal pointing to a deleted contact."""
    owner = await api.register(organization_name="Race")
    engine: AsyncEngine = api.app.state.resources.engine
    outcomes: set[tuple[int, int]] = set()
    for round_ in range(8):
        contact = await create_contact(owner, f"Contested {round_}")
        coroutines = [
            owner.delete(f"/contacts/{contact['id']}"),
            owner.post("/deals", json={"contact_id": contact["id"], "title": f"Race {round_}"}),
        ]
        if round_ % 2:  # vary which request is sent first
            coroutines.reverse()
        responses = await asyncio.gather(*coroutines)
        if round_ % 2:
            responses.reverse()
        deleted, created = responses
        pair = (deleted.status_code, created.status_code)
        outcomes.add(pair)

        contacts = await count_live(engine, "contacts", "id = :id", id=contact["id"])
        deals = await count_live(engine, "deals", "contact_id = :id", id=contact["id"])
        if pair == (204, 400):
            assert_problem(created, 400, "CONTACT_NOT_FOUND")
            assert (contacts, deals) == (0, 0)
        elif pair == (409, 201):
            assert_problem(deleted, 409, "CONTACT_HAS_DEALS")
            assert (contacts, deals) == (1, 1)
        else:
            pytest.fail(f"round {round_}: delete {deleted.text!r}, create {created.text!r}")

    orphans = await count_live(
        engine,
        "deals",
        "NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = deals.contact_id"
        " AND c.deleted_at IS NULL)",
    )
    assert orphans == 0
    assert outcomes <= {(204, 400), (409, 201)}


async def test_concurrent_contact_delete_and_deal_create_on_postgresql(pg_api: Api) -> None:
    await race_contact_delete_against_deal_create(pg_api)


async def test_concurrent_contact_delete_and_deal_create(api: Api) -> None:
    await race_contact_delete_against_deal_create(api)
