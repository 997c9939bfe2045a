"""Deals: creation defaults, money and currency input, partial updates, and the filtered list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    Api,
    User,
    assert_problem,
    count_live,
    count_rows,
    count_trashed,
    create_contact,
    create_deal,
    patch_deal,
    read_deal,
)

DEAL_KEYS = {
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
    "company_id",  # section 17: null for a client that ignores companies
    "custom_fields",  # section 17: {} for a client that ignores custom fields
    "pipeline_id",  # section 17: the default pipeline for a client that ignores pipelines
}


async def post_raw(user: User, path: str, content: str) -> httpx.Response:
    """Send a JSON body verbatim (for tokens such as NaN or 1e400 that json.dumps won't emit)."""
    return await user.api.client.post(
        user.api.url(path),
        content=content.encode(),
        headers={**user.headers(), "Content-Type": "application/json"},
    )


def is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.fixture
async def contact_id(owner: User) -> int:
    return await create_contact(owner)


# --- create -------------------------------------------------------------------------------


async def test_create_deal_defaults(api: Api, owner: User, contact_id: int) -> None:
    member = await api.member_of(owner, "member")

    response = await member.post("/deals", json={"contact_id": contact_id, "title": "  Big one "})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == DEAL_KEYS
    assert body["organization_id"] == owner.organization_id
    assert body["contact_id"] == contact_id
    assert body["owner_id"] == member.id
    assert body["title"] == "Big one"
    assert body["status"] == "new"
    assert body["stage"] == "qualification"
    assert body["amount"] == 0
    assert is_json_number(body["amount"])
    assert body["currency"] == "USD"
    for key in ("created_at", "updated_at"):
        assert datetime.fromisoformat(body[key]).utcoffset() is not None
    assert await read_deal(owner, body["id"]) == body


async def test_currency_is_upper_cased(owner: User, contact_id: int) -> None:
    for given, stored in (("eur", "EUR"), ("Gbp", "GBP"), ("JPY", "JPY")):
        deal = await create_deal(owner, contact_id, currency=given)
        assert deal["currency"] == stored
        assert (await read_deal(owner, deal["id"]))["currency"] == stored


async def test_invalid_currency_is_422_and_creates_nothing(
    owner: User, contact_id: int, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    for currency in ("ZZZ", "US", "usdx", "", "U$D", "12A", 840, None):
        with subtests.test(currency=currency):
            response = await owner.post(
                "/deals", json={"contact_id": contact_id, "title": "X", "currency": currency}
            )
            assert_problem(response, 422, "VALIDATION_ERROR")
            assert await count_rows(engine, "deals") == 0


async def test_amount_accepts_numbers_and_numeric_strings(
    owner: User, contact_id: int, subtests: pytest.Subtests
) -> None:
    cases: list[tuple[Any, float]] = [
        (1500, 1500),
        (12.5, 12.5),
        ("12.50", 12.5),
        ("0.01", 0.01),
        (0, 0),
        ("7", 7),
        (999999999999.99, 999999999999.99),
        ("999999999999.99", 999999999999.99),
    ]
    for given, expected in cases:
        with subtests.test(amount=given):
            deal = await create_deal(owner, contact_id, amount=given)
            assert is_json_number(deal["amount"])
            assert deal["amount"] == expected
            assert (await read_deal(owner, deal["id"]))["amount"] == expected


async def test_largest_amount_round_trips_exactly(owner: User, contact_id: int) -> None:
    deal = await create_deal(owner, contact_id, amount="999999999999.99")

    response = await owner.get(f"/deals/{deal['id']}")
    assert '"amount":999999999999.99' in response.text.replace(" ", "")
    # Compared in the database, the stored value is exactly that, not a rounded float.
    exact = await owner.get(
        "/deals", params={"min_amount": "999999999999.99", "max_amount": "999999999999.99"}
    )
    assert [d["id"] for d in exact.json()["items"]] == [deal["id"]]
    below = await owner.get("/deals", params={"max_amount": "999999999999.98"})
    assert below.json()["total"] == 0


async def test_invalid_amount_is_422_and_creates_nothing(
    owner: User, contact_id: int, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    json_values: list[Any] = [
        "1.234",
        1.234,
        0.001,
        "1234567890123",
        1234567890123,
        "1000000000000.00",
        -1,
        "-0.01",
        "NaN",
        "Infinity",
        "-Infinity",
        "abc",
        "",
        None,
        True,
        [],
        {"value": 1},
    ]
    for amount in json_values:
        with subtests.test(amount=amount):
            response = await owner.post(
                "/deals", json={"contact_id": contact_id, "title": "X", "amount": amount}
            )
            assert_problem(response, 422, "VALIDATION_ERROR")
    for token in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
        with subtests.test(raw=token):
            body = f'{{"contact_id": {contact_id}, "title": "X", "amount": {token}}}'
            response = await post_raw(owner, "/deals", body)
            assert_problem(response, 422)
    assert await count_rows(engine, "deals") == 0


async def test_create_with_another_organizations_or_missing_contact_is_400(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    other = await api.register(organization_name="Other")
    foreign_contact = await create_contact(other, "Theirs")

    for contact in (foreign_contact, 987654321):
        response = await owner.post("/deals", json={"contact_id": contact, "title": "X"})
        assert_problem(response, 400, "CONTACT_NOT_FOUND")
    assert await count_rows(engine, "deals") == 0
    assert await count_rows(engine, "activities") == 0


async def test_create_rejects_invalid_bodies(
    owner: User, contact_id: int, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    cases: dict[str, Any] = {
        "status": {"status": "won"},
        "stage": {"stage": "closed"},
        "owner_id": {"owner_id": owner.id},
        "organization_id": {"organization_id": owner.organization_id},
        "id": {"id": 1},
        "unknown": {"priority": "high"},
        "blank title": {"title": "   "},
        "null title": {"title": None},
        "long title": {"title": "T" * 201},
        "contact 0": {"contact_id": 0},
        "contact string": {"contact_id": "abc"},
    }
    for case, extra in cases.items():
        with subtests.test(case):
            body = {"contact_id": contact_id, "title": "Deal", **extra}
            assert_problem(await owner.post("/deals", json=body), 422, "VALIDATION_ERROR")
    for missing in ("contact_id", "title"):
        with subtests.test(missing=missing):
            body = {"contact_id": contact_id, "title": "Deal"}
            del body[missing]
            assert_problem(await owner.post("/deals", json=body), 422, "VALIDATION_ERROR")
    assert await count_rows(engine, "deals") == 0


async def test_longest_title_is_stored_even_when_case_folding_expands_it(
    owner: User, contact_id: int
) -> None:
    """'ß' folds to 'ss': a valid 200-character title is twice as long once folded for
    search, and must still be stored (not a 500) and found."""
    created = await owner.post("/deals", json={"contact_id": contact_id, "title": "ß" * 200})
    assert created.status_code == 201, created.text
    other = await create_deal(owner, contact_id, "Short")

    patched = await owner.patch(f"/deals/{other['id']}", json={"title": "Straße " + "ß" * 193})

    assert patched.status_code == 200, patched.text
    found = await owner.get("/deals", params={"search": "ßß", "order": "asc"})
    assert [d["id"] for d in found.json()["items"]] == [created.json()["id"], other["id"]]


# --- read / update / delete ---------------------------------------------------------------


async def test_read_missing_deal_is_404(owner: User) -> None:
    assert_problem(await owner.get("/deals/987654321"), 404, "DEAL_NOT_FOUND")
    assert_problem(await owner.patch("/deals/987654321", json={"title": "X"}), 404)
    assert_problem(await owner.delete("/deals/987654321"), 404, "DEAL_NOT_FOUND")


async def test_patch_changes_only_the_fields_sent(owner: User, contact_id: int) -> None:
    deal = await create_deal(owner, contact_id, "Old", amount="10.50", currency="EUR")

    body = await patch_deal(owner, deal["id"], title="New")

    assert body["title"] == "New"
    unchanged = ("amount", "currency", "status", "stage", "contact_id", "owner_id", "created_at")
    assert {k: body[k] for k in unchanged} == {k: deal[k] for k in unchanged}
    assert await read_deal(owner, deal["id"]) == body

    body = await patch_deal(owner, deal["id"], amount="20", currency="gbp")
    assert (body["title"], body["amount"], body["currency"]) == ("New", 20, "GBP")


async def test_patch_rejects_invalid_bodies_and_changes_nothing(
    owner: User, contact_id: int, engine: AsyncEngine, subtests: pytest.Subtests
) -> None:
    deal = await create_deal(owner, contact_id, "Stable", amount=5)
    cases: dict[str, Any] = {
        field: {field: None}
        for field in ("title", "amount", "currency", "status", "stage", "contact_id", "owner_id")
    }
    cases |= {
        "status enum": {"status": "done"},
        "stage enum": {"stage": "won"},
        "amount scale": {"amount": "1.001"},
        "amount negative": {"amount": -5},
        "currency": {"currency": "ZZZ"},
        "organization_id": {"organization_id": 1},
        "unknown": {"priority": 1},
    }
    for case, body in cases.items():
        with subtests.test(case):
            response = await owner.patch(f"/deals/{deal['id']}", json=body)
            assert_problem(response, 422, "VALIDATION_ERROR")
            assert await read_deal(owner, deal["id"]) == deal
    assert await count_rows(engine, "activities") == 0


async def test_delete_deal(owner: User, contact_id: int, engine: AsyncEngine) -> None:
    deal = await create_deal(owner, contact_id)

    response = await owner.delete(f"/deals/{deal['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await owner.get(f"/deals/{deal['id']}"), 404, "DEAL_NOT_FOUND")
    assert await count_live(engine, "deals") == 0
    assert await count_trashed(engine, "deals") == 1  # in the trash, restorable


# --- the list ------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Five deals whose created_at, updated_at, amount and title orders all differ."""

    owner: User
    member: User
    first_contact: int
    second_contact: int
    d1: int
    d2: int
    d3: int
    d4: int
    d5: int


@pytest.fixture
async def dataset(api: Api, owner: User) -> Dataset:
    member = await api.member_of(owner, "member")
    c1 = await create_contact(owner, "First")
    c2 = await create_contact(owner, "Second")
    # Created in this order (created_at ascending = d1..d5).
    d1 = (await create_deal(owner, c1, "tmp", amount=100))["id"]
    d2 = (await create_deal(member, c2, "tmp", amount="250.50"))["id"]
    d3 = (await create_deal(owner, c2, "tmp", amount=0))["id"]
    d4 = (await create_deal(member, c1, "tmp", amount=1000, currency="EUR"))["id"]
    d5 = (await create_deal(owner, c1, "tmp", amount=250.5))["id"]
    await patch_deal(owner, d2, status="in_progress", stage="proposal")
    await patch_deal(owner, d3, stage="negotiation")
    await patch_deal(owner, d4, status="won", stage="closed")
    await patch_deal(owner, d5, status="lost")
    # Titles last, in this order: updated_at ascending = d5, d1, d4, d3, d2.
    for deal_id, title in (
        (d5, "Charlie ПРОДАЖА"),
        (d1, "Delta"),
        (d4, "Echo"),
        (d3, "Alpha deal"),
        (d2, "Bravo Сделка"),
    ):
        await patch_deal(owner, deal_id, title=title)
    return Dataset(owner, member, c1, c2, d1, d2, d3, d4, d5)


async def deal_ids(user: User, params: Any) -> list[int]:
    response = await user.get("/deals", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return [item["id"] for item in body["items"]]


async def test_list_orderings(dataset: Dataset, subtests: pytest.Subtests) -> None:
    d = dataset
    ascending = {
        "created_at": [d.d1, d.d2, d.d3, d.d4, d.d5],
        "updated_at": [d.d5, d.d1, d.d4, d.d3, d.d2],
        # 250.50 twice: the id breaks the tie (in both directions).
        "amount": [d.d3, d.d1, d.d2, d.d5, d.d4],
        "title": [d.d3, d.d2, d.d5, d.d1, d.d4],
    }
    for order_by, expected in ascending.items():
        with subtests.test(order_by=order_by, order="asc"):
            params = {"order_by": order_by, "order": "asc"}
            assert await deal_ids(d.owner, params) == expected
        with subtests.test(order_by=order_by, order="desc"):
            params = {"order_by": order_by, "order": "desc"}
            assert await deal_ids(d.owner, params) == expected[::-1]
    with subtests.test("defaults: created_at desc"):
        assert await deal_ids(d.owner, {}) == ascending["created_at"][::-1]
        assert await deal_ids(d.owner, {"order_by": "amount"}) == ascending["amount"][::-1]


async def test_list_filters(dataset: Dataset, subtests: pytest.Subtests) -> None:
    d = dataset
    # Expected in the default order, newest first.
    cases: list[tuple[Any, list[int]]] = [
        ({"status": "new"}, [d.d3, d.d1]),
        ([("status", "new"), ("status", "won")], [d.d4, d.d3, d.d1]),
        ({"status": "in_progress"}, [d.d2]),
        ({"stage": "qualification"}, [d.d5, d.d1]),
        ([("stage", "proposal"), ("stage", "closed")], [d.d4, d.d2]),
        ({"min_amount": "250.5"}, [d.d5, d.d4, d.d2]),
        ({"max_amount": "250.50"}, [d.d5, d.d3, d.d2, d.d1]),
        ({"min_amount": 100, "max_amount": 250.5}, [d.d5, d.d2, d.d1]),
        ({"min_amount": 0, "max_amount": 0}, [d.d3]),
        ({"min_amount": "250.51"}, [d.d4]),
        ({"owner_id": d.member.id}, [d.d4, d.d2]),
        ({"owner_id": d.owner.id}, [d.d5, d.d3, d.d1]),
        ({"contact_id": d.first_contact}, [d.d5, d.d4, d.d1]),
        ({"search": "сделка"}, [d.d2]),
        ({"search": "СДЕЛКА"}, [d.d2]),
        ({"search": "продажа"}, [d.d5]),
        ({"search": "DEAL"}, [d.d3]),
        ({"search": "%"}, []),
        ({"search": "_"}, []),
        ({"status": "new", "contact_id": d.second_contact}, [d.d3]),
        ({"status": "lost", "stage": "proposal"}, []),
        ([("status", "won"), ("status", "lost"), ("min_amount", "500")], [d.d4]),
    ]
    for params, expected in cases:
        with subtests.test(params=str(params)):
            assert await deal_ids(d.owner, params) == expected


async def test_list_pages(dataset: Dataset) -> None:
    d = dataset
    first = (await d.owner.get("/deals", params={"page_size": 2})).json()
    last = (await d.owner.get("/deals", params={"page_size": 2, "page": 3})).json()
    single = (await d.owner.get("/deals", params={"page_size": 5})).json()
    filtered = (await d.owner.get("/deals", params={"page_size": 2, "owner_id": d.owner.id})).json()

    assert (first["total"], first["page"], first["page_size"], first["pages"]) == (5, 1, 2, 3)
    assert [x["id"] for x in first["items"]] == [d.d5, d.d4]
    assert (last["page"], last["pages"]) == (3, 3)
    assert [x["id"] for x in last["items"]] == [d.d1]
    assert (single["pages"], len(single["items"])) == (1, 5)
    assert (filtered["total"], filtered["pages"]) == (3, 2)
    assert set(first["items"][0]) == DEAL_KEYS
    assert all(is_json_number(x["amount"]) for x in single["items"])


async def test_list_rejects_unknown_values(owner: User, subtests: pytest.Subtests) -> None:
    for params in (
        {"status": "done"},
        [("status", "new"), ("status", "bogus")],
        {"stage": "won"},
        {"order_by": "contact_id"},
        {"order": "up"},
        {"min_amount": -1},
        {"max_amount": "abc"},
        {"min_amount": "1.001"},
        {"owner_id": 0},
        {"contact_id": "x"},
        {"page": 0},
        {"page_size": 0},
        {"page_size": 101},
    ):
        with subtests.test(params=str(params)):
            assert_problem(await owner.get("/deals", params=params), 422, "VALIDATION_ERROR")
