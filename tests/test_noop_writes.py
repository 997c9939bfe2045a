"""A PATCH that changes nothing writes nothing: no row (no `updated_at`, no timeline entry, no
data version) moves, and the organization's cached analytics and list totals stay cached.

Each case warms the analytics summary (a HIT on the second read), sends a PATCH with the
values the record already has (in the spellings a client may use: a numeric string for an
amount, a lower-case currency), then checks that every table is exactly as before and that
the next summary is still a HIT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import AppFactory
from tests.support import Api, User, create_contact, create_deal, engine_of, snapshot

SUMMARY = "/analytics/deals/summary"


@pytest.fixture
async def api(make_api: AppFactory, database_url: str) -> Api:
    return await make_api(database_url)


async def summary_cache(user: User) -> str:
    response = await user.get(SUMMARY)
    assert response.status_code == 200, response.text
    return response.headers["X-Cache"]


async def deals_total(user: User) -> int:
    response = await user.get("/deals")
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def assert_changes_nothing(
    api: Api, user: User, patch: Callable[[], Awaitable[Any]]
) -> dict[str, Any]:
    await summary_cache(user)
    assert await summary_cache(user) == "HIT"
    before = await snapshot(engine_of(api))

    response = await patch()
    assert response.status_code == 200, response.text

    assert await snapshot(engine_of(api)) == before
    assert await summary_cache(user) == "HIT"
    body: dict[str, Any] = response.json()
    return body


async def test_a_deal_patch_with_the_current_values_writes_nothing(api: Api) -> None:
    owner = await api.register()
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact, "Big sale", amount="250.5", currency="EUR")
    assert (
        await owner.patch(
            f"/deals/{deal['id']}", json={"status": "in_progress", "stage": "proposal"}
        )
    ).status_code == 200
    current = (await owner.get(f"/deals/{deal['id']}")).json()
    activities = (await owner.get(f"/deals/{deal['id']}/activities")).json()["total"]

    body = await assert_changes_nothing(
        api,
        owner,
        lambda: owner.patch(
            f"/deals/{deal['id']}",
            json={
                "title": "Big sale",
                "amount": "250.50",
                "currency": "eur",
                "status": "in_progress",
                "stage": "proposal",
                "contact_id": contact,
                "owner_id": owner.id,
            },
        ),
    )
    assert body == current  # same updated_at
    assert (await owner.get(f"/deals/{deal['id']}/activities")).json()["total"] == activities


async def test_a_partly_repeated_deal_patch_changes_only_what_differs(api: Api) -> None:
    owner = await api.register()
    contact = await create_contact(owner)
    deal = await create_deal(owner, contact, "Deal", amount="10")
    await summary_cache(owner)
    assert await summary_cache(owner) == "HIT"

    response = await owner.patch(f"/deals/{deal['id']}", json={"title": "Deal", "amount": "20"})
    assert response.status_code == 200, response.text
    assert response.json()["updated_at"] != deal["updated_at"]
    assert await summary_cache(owner) == "MISS"
    summary = (await owner.get(SUMMARY)).json()
    assert summary["total"]["total_amount"] == 20


async def test_a_contact_patch_with_the_current_values_writes_nothing(api: Api) -> None:
    owner = await api.register()
    created = await owner.post(
        "/contacts", json={"name": "Ann Lee", "email": "ann@example.com", "phone": "+1 555"}
    )
    assert created.status_code == 201, created.text
    contact = created.json()
    await create_deal(owner, contact["id"])
    assert await deals_total(owner) == 1

    body = await assert_changes_nothing(
        api,
        owner,
        lambda: owner.patch(
            f"/contacts/{contact['id']}",
            json={
                "name": "Ann Lee",
                "email": "ann@example.com",
                "phone": "+1 555",
                "owner_id": owner.id,
            },
        ),
    )
    assert body == contact


async def test_a_task_patch_with_the_current_values_writes_nothing(api: Api) -> None:
    owner = await api.register()
    deal = await create_deal(owner, await create_contact(owner))
    created = await owner.post(
        "/tasks",
        json={
            "deal_id": deal["id"],
            "title": "Call",
            "description": "About the offer",
            "due_date": "2999-01-31",
        },
    )
    assert created.status_code == 201, created.text
    task = created.json()

    body = await assert_changes_nothing(
        api,
        owner,
        lambda: owner.patch(
            f"/tasks/{task['id']}",
            json={
                "title": "Call",
                "description": "About the offer",
                "due_date": "2999-01-31",
                "is_done": False,
            },
        ),
    )
    assert body == task


async def test_an_organization_and_member_patch_with_the_current_values_write_nothing(
    api: Api,
) -> None:
    owner = await api.register(organization_name="Acme")
    member = await api.member_of(owner, "manager")
    org = f"/organizations/{owner.organization_id}"
    await assert_changes_nothing(api, owner, lambda: owner.patch(org, json={"name": "Acme"}))
    await assert_changes_nothing(
        api,
        owner,
        lambda: owner.patch(f"{org}/members/{member.id}", json={"role": "manager"}),
    )
