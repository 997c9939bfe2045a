"""Analytics: exact figures, tenant scoping, filters, the `days` window, the funnel's conversion
rules, who may read them, and the running totals they are computed from."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Deal
from tests.support import Api, User, assert_problem

STATUSES = ("new", "in_progress", "won", "lost")
STAGES = ("qualification", "proposal", "negotiation", "closed")
SUMMARY = "/analytics/deals/summary"
FUNNEL = "/analytics/deals/funnel"

# The running totals (summed over their slots) must always equal this aggregate over the
# live deals themselves (the trash counts nowhere).
STATS_SQL = text(
    "SELECT organization_id, currency, status, stage, sum(deal_count), sum(amount_sum) "
    "FROM deal_stats GROUP BY organization_id, currency, status, stage "
    "HAVING sum(deal_count) <> 0 OR sum(amount_sum) <> 0"
)
DEALS_SQL = text(
    "SELECT organization_id, currency, status, stage, count(*), sum(amount) FROM deals "
    "WHERE deleted_at IS NULL GROUP BY organization_id, currency, status, stage"
)


# --- helpers ------------------------------------------------------------------------------


async def new_contact(user: User, name: str = "Client") -> int:
    response = await user.post("/contacts", json={"name": name})
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


async def new_deal(
    user: User,
    contact_id: int,
    amount: str = "0",
    currency: str = "USD",
    *,
    status: str | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """Create a deal through the API, then move it to `status`/`stage` with one PATCH."""
    response = await user.post(
        "/deals",
        json={"contact_id": contact_id, "title": "Deal", "amount": amount, "currency": currency},
    )
    assert response.status_code == 201, response.text
    deal: dict[str, Any] = response.json()
    changes = {k: v for k, v in (("status", status), ("stage", stage)) if v is not None}
    if changes:
        response = await user.patch(f"/deals/{deal['id']}", json=changes)
        assert response.status_code == 200, response.text
        deal = response.json()
    return deal


async def read(user: User, path: str, **params: Any) -> dict[str, Any]:
    response = await user.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] in {"HIT", "MISS"}
    body: dict[str, Any] = response.json()
    return body


def totals(count: int, amount: float) -> dict[str, Any]:
    return {"count": count, "total_amount": amount}


def summary_of(
    by_status: dict[str, tuple[int, float]],
    total: tuple[int, float],
    avg_won: float,
    new_deals: int,
    days: int = 30,
    weighted: float = 0,
) -> dict[str, Any]:
    return {
        "by_status": {s: totals(*by_status.get(s, (0, 0))) for s in STATUSES},
        "total": totals(*total),
        "avg_won_amount": avg_won,
        # section 17: open deals' amounts x their stage's probability (default pipeline:
        # qualification 10 %, proposal 40 %, negotiation 70 %, closed 100 %)
        "weighted_pipeline_value": weighted,
        "new_deals_last_n_days": new_deals,
        "days": days,
    }


def stage_row(
    stage: str, by_status: dict[str, int], reached: int, conversion: float | None
) -> dict[str, Any]:
    return {
        "stage": stage,
        "count": sum(by_status.values()),
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "reached": reached,
        "conversion_from_prev": conversion,
    }


def empty_funnel() -> dict[str, Any]:
    return {"stages": [stage_row(stage, {}, 0, None) for stage in STAGES]}


def assert_funnel_shape(funnel: dict[str, Any]) -> None:
    assert [row["stage"] for row in funnel["stages"]] == list(STAGES)
    for row in funnel["stages"]:
        assert list(row["by_status"]) == list(STATUSES)


async def running_totals(engine: AsyncEngine) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """(rows of deal_stats, the same figures recomputed from the deals table)."""

    def normalise(rows: Any) -> set[tuple[Any, ...]]:
        return {
            (int(org), str(cur), str(status), str(stage), int(n), Decimal(str(amount)))
            for org, cur, status, stage, n, amount in rows
        }

    async with engine.connect() as conn:
        stats = normalise((await conn.execute(STATS_SQL)).all())
        grouped = normalise((await conn.execute(DEALS_SQL)).all())
    return stats, grouped


async def set_created_at(engine: AsyncEngine, deal_id: int, created_at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(Deal).where(Deal.id == deal_id).values(created_at=created_at))


# --- exact figures --------------------------------------------------------------------------


@pytest.fixture
async def stranger(api: Api) -> User:
    return await api.register(organization_name="Other")


@pytest.fixture
async def dataset(owner: User, stranger: User) -> User:
    """Eight deals of `owner`'s organization in every status, four stages, two currencies, plus
    another organization's deals that must never count."""
    contact = await new_contact(owner)
    await new_deal(owner, contact, "0.10")
    await new_deal(owner, contact, "0.20")
    await new_deal(owner, contact, "100.05", status="in_progress", stage="proposal")
    await new_deal(owner, contact, "200.00", status="won", stage="negotiation")
    await new_deal(owner, contact, "100.01", status="won", stage="closed")
    await new_deal(owner, contact, "50", status="lost", stage="closed")
    await new_deal(owner, contact, "1000", "eur", status="won", stage="closed")
    await new_deal(owner, contact, "5.55", "EUR", status="in_progress")

    elsewhere = await new_contact(stranger)
    await new_deal(stranger, elsewhere, "999.99", status="won", stage="closed")
    await new_deal(stranger, elsewhere, "1.00", "EUR")
    return owner


async def test_summary_has_exact_figures_per_status(dataset: User) -> None:
    summary = await read(dataset, SUMMARY)

    assert summary == summary_of(
        {
            "new": (2, 0.3),  # 0.10 + 0.20, exactly
            "in_progress": (2, 105.6),
            "won": (3, 1300.01),
            "lost": (1, 50.0),
        },
        total=(8, 1455.91),
        avg_won=433.34,  # 1300.01 / 3 = 433.3366...
        new_deals=8,
        weighted=40.61,  # (0.10 + 0.20 + 5.55) x 10 % + 100.05 x 40 % = 40.605
    )


async def test_summary_filtered_by_currency(dataset: User) -> None:
    usd = await read(dataset, SUMMARY, currency="USD")
    eur = await read(dataset, SUMMARY, currency="EUR")

    assert usd == summary_of(
        {"new": (2, 0.3), "in_progress": (1, 100.05), "won": (2, 300.01), "lost": (1, 50.0)},
        total=(6, 450.36),
        avg_won=150.01,  # 300.01 / 2 = 150.005, rounded half up
        new_deals=6,
        weighted=40.05,
    )
    assert eur == summary_of(
        {"in_progress": (1, 5.55), "won": (1, 1000.0)},
        total=(2, 1005.55),
        avg_won=1000.0,
        new_deals=2,
        weighted=0.56,  # 5.55 x 10 % = 0.555, rounded half up
    )
    assert await read(dataset, SUMMARY, currency="eur") == eur
    assert await read(dataset, SUMMARY, currency="gbp") == summary_of({}, (0, 0), 0, 0)


async def test_funnel_counts_reached_and_conversion(dataset: User) -> None:
    funnel = await read(dataset, FUNNEL)

    assert_funnel_shape(funnel)
    assert funnel == {
        "stages": [
            stage_row("qualification", {"new": 2, "in_progress": 1}, 8, None),
            stage_row("proposal", {"in_progress": 1}, 5, 62.5),
            stage_row("negotiation", {"won": 1}, 4, 80.0),
            stage_row("closed", {"won": 2, "lost": 1}, 3, 75.0),
        ]
    }


async def test_funnel_filtered_by_currency(dataset: User) -> None:
    usd = await read(dataset, FUNNEL, currency="usd")

    assert usd == {
        "stages": [
            stage_row("qualification", {"new": 2}, 6, None),
            stage_row("proposal", {"in_progress": 1}, 4, 66.67),
            stage_row("negotiation", {"won": 1}, 3, 75.0),
            stage_row("closed", {"won": 1, "lost": 1}, 2, 66.67),
        ]
    }
    assert await read(dataset, FUNNEL, currency="JPY") == empty_funnel()


async def test_another_organization_sees_only_its_own_deals(dataset: User, stranger: User) -> None:
    assert await read(stranger, SUMMARY) == summary_of(
        {"new": (1, 1.0), "won": (1, 999.99)},
        total=(2, 1000.99),
        avg_won=999.99,
        new_deals=2,
        weighted=0.1,
    )
    assert await read(stranger, FUNNEL) == {
        "stages": [
            stage_row("qualification", {"new": 1}, 2, None),
            stage_row("proposal", {}, 1, 50.0),
            stage_row("negotiation", {}, 1, 100.0),
            stage_row("closed", {"won": 1}, 1, 100.0),
        ]
    }
    # Same parameters, another organization: never served the other's cached entry.
    assert (await read(dataset, SUMMARY))["total"] == totals(8, 1455.91)
    assert (await read(stranger, SUMMARY))["total"] == totals(2, 1000.99)


async def test_empty_organization_is_zero_filled(api: Api, owner: User) -> None:
    other = await api.register(organization_name="Busy")
    contact = await new_contact(other)
    await new_deal(other, contact, "10", status="won")

    summary = await read(owner, SUMMARY)
    funnel = await read(owner, FUNNEL)

    assert summary == summary_of({}, total=(0, 0), avg_won=0, new_deals=0)
    assert list(summary["by_status"]) == list(STATUSES)
    assert funnel == empty_funnel()
    assert_funnel_shape(funnel)


async def test_conversion_is_null_after_a_stage_nobody_reached(owner: User) -> None:
    contact = await new_contact(owner)
    await new_deal(owner, contact, "1")
    await new_deal(owner, contact, "2", status="in_progress")
    await new_deal(owner, contact, "3", status="lost")

    funnel = await read(owner, FUNNEL)

    assert funnel == {
        "stages": [
            stage_row("qualification", {"new": 1, "in_progress": 1, "lost": 1}, 3, None),
            stage_row("proposal", {}, 0, 0.0),  # previous reached 3: a real 0 %
            stage_row("negotiation", {}, 0, None),  # previous reached 0: undefined
            stage_row("closed", {}, 0, None),
        ]
    }


async def test_reached_counts_deals_that_skipped_a_stage(owner: User) -> None:
    contact = await new_contact(owner)
    await new_deal(owner, contact, "1")
    await new_deal(owner, contact, "2", stage="closed")
    await new_deal(owner, contact, "3", stage="closed", status="lost")

    funnel = await read(owner, FUNNEL)

    assert [(r["count"], r["reached"], r["conversion_from_prev"]) for r in funnel["stages"]] == [
        (1, 3, None),
        (0, 2, 66.67),
        (0, 2, 100.0),
        (2, 2, 100.0),
    ]


async def test_conversion_is_rounded_half_up(owner: User) -> None:
    """1 of 32 deals reached the proposal: 3.125 % is shown as 3.13, the way `avg_won_amount`
    (150.005 -> 150.01 above) and any calculator round it."""
    contact = await new_contact(owner)
    for _ in range(31):
        await new_deal(owner, contact, "1")
    await new_deal(owner, contact, "1", stage="proposal")

    funnel = await read(owner, FUNNEL)

    assert funnel["stages"][1]["reached"] == 1
    assert funnel["stages"][0]["reached"] == 32
    assert funnel["stages"][1]["conversion_from_prev"] == 3.13


# --- parameters -----------------------------------------------------------------------------


async def test_invalid_currency_is_422(owner: User) -> None:
    for path in (SUMMARY, FUNNEL):
        for currency in ("XYZ", "US", "USDX", "12$", ""):
            response = await owner.get(path, params={"currency": currency})
            body = assert_problem(response, 422)
            assert any("currency" in error["loc"] for error in body["errors"]), currency


async def test_days_accepts_1_to_365_and_defaults_to_30(owner: User) -> None:
    for days in (1, 365):
        assert (await read(owner, SUMMARY, days=days))["days"] == days
    assert (await read(owner, SUMMARY))["days"] == 30


async def test_days_out_of_range_is_422(owner: User) -> None:
    for days in ("0", "366", "-1", "abc", "1.5"):
        body = assert_problem(await owner.get(SUMMARY, params={"days": days}), 422)
        assert any("days" in error["loc"] for error in body["errors"]), days


async def test_new_deals_window_counts_by_creation_time(engine: AsyncEngine, owner: User) -> None:
    contact = await new_contact(owner)
    now = datetime.now(UTC)
    ages = {
        "now": timedelta(0),
        "23h": timedelta(hours=23),
        "2d": timedelta(days=2),
        "40d": timedelta(days=40),
        "364d": timedelta(days=364),
        "366d": timedelta(days=366),
    }
    for label, age in ages.items():
        deal = await new_deal(owner, contact, "1", "EUR" if label == "40d" else "USD")
        if age:
            await set_created_at(engine, deal["id"], now - age)

    windows = {
        days: (await read(owner, SUMMARY, days=days))["new_deals_last_n_days"]
        for days in (1, 30, 365)
    }

    assert windows == {1: 2, 30: 3, 365: 5}
    eur = await read(owner, SUMMARY, days=365, currency="EUR")
    assert eur["new_deals_last_n_days"] == 1
    assert (await read(owner, SUMMARY, days=30, currency="EUR"))["new_deals_last_n_days"] == 0
    # The window counts creation only: every deal is still in the totals.
    assert eur["total"]["count"] == 1
    assert (await read(owner, SUMMARY, days=1))["total"]["count"] == 6


# --- who may read ---------------------------------------------------------------------------


async def test_every_role_reads_the_same_analytics(api: Api, dataset: User) -> None:
    expected = {path: await read(dataset, path) for path in (SUMMARY, FUNNEL)}
    for role in ("admin", "manager", "member"):
        user = await api.member_of(dataset, role)
        for path in (SUMMARY, FUNNEL):
            assert await read(user, path) == expected[path], role


async def test_non_member_is_403(api: Api, owner: User) -> None:
    outsider = await api.register(organization_name="Outside")
    for path in (SUMMARY, FUNNEL):
        for organization_id in (owner.organization_id, 10**9):
            response = await api.client.get(
                api.url(path), headers=outsider.headers(organization_id)
            )
            assert_problem(response, 403, "NOT_A_MEMBER")


async def test_removed_member_loses_access_at_once(api: Api, owner: User) -> None:
    member = await api.member_of(owner, "member")
    assert (await member.get(SUMMARY)).status_code == 200
    removed = await owner.delete(f"/organizations/{owner.organization_id}/members/{member.id}")
    assert removed.status_code == 204, removed.text

    assert_problem(await member.get(SUMMARY), 403, "NOT_A_MEMBER")


async def test_no_token_is_401_and_no_organization_is_422(api: Api, owner: User) -> None:
    organization = {"X-Organization-Id": str(owner.organization_id)}
    for path in (SUMMARY, FUNNEL):
        response = await api.client.get(api.url(path), headers=organization)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].lower().startswith("bearer")
        bad_token = {**organization, "Authorization": "Bearer not-a-token"}
        assert_problem(await api.client.get(api.url(path), headers=bad_token), 401)
        no_organization = {"Authorization": f"Bearer {owner.access_token}"}
        assert_problem(await api.client.get(api.url(path), headers=no_organization), 422)


# --- the running totals ---------------------------------------------------------------------


def expected_summary(
    deals: dict[int, dict[str, Any]], currency: str | None = None
) -> dict[str, dict[str, Any]]:
    """Count and amount per status, computed here from the deals as the API returned them."""
    counts = dict.fromkeys(STATUSES, 0)
    amounts = dict.fromkeys(STATUSES, Decimal(0))
    for deal in deals.values():
        if currency is None or deal["currency"] == currency:
            counts[deal["status"]] += 1
            amounts[deal["status"]] += Decimal(str(deal["amount"]))
    return {status: totals(counts[status], float(amounts[status])) for status in STATUSES}


async def test_running_totals_follow_every_write(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    rng = random.Random(20240917)
    other = await api.register(organization_name="Second")
    users = (owner, other)
    contacts = {user.id: await new_contact(user) for user in users}
    deals: dict[int, dict[int, dict[str, Any]]] = {user.id: {} for user in users}
    currencies = ("USD", "eur", "GBP")

    def random_amount() -> str:
        return str(Decimal(rng.choice([0, rng.randint(1, 2_000_000)])) / 100)

    for step in range(90):
        user = rng.choice(users)
        mine = deals[user.id]
        action = rng.choices(["create", "update", "delete"], weights=[3, 6, 1])[0]
        if action == "create" or not mine:
            response = await user.post(
                "/deals",
                json={
                    "contact_id": contacts[user.id],
                    "title": f"Deal {step}",
                    "amount": random_amount(),
                    "currency": rng.choice(currencies),
                },
            )
            assert response.status_code == 201, response.text
            mine[response.json()["id"]] = response.json()
        elif action == "update":
            deal_id = rng.choice(sorted(mine))
            deal = mine[deal_id]
            fields = rng.sample(["status", "stage", "amount", "currency"], rng.randint(1, 4))
            changes: dict[str, Any] = {}
            for field in fields:
                if field == "status":
                    changes["status"] = rng.choice(STATUSES)
                elif field == "stage":
                    changes["stage"] = rng.choice(STAGES)
                elif field == "amount":
                    changes["amount"] = random_amount()
                else:
                    changes["currency"] = rng.choice(currencies)
            response = await user.patch(f"/deals/{deal_id}", json=changes)
            amount_after = Decimal(str(changes.get("amount", deal["amount"])))
            if changes.get("status", deal["status"]) == "won" and amount_after <= 0:
                assert_problem(response, 400, "DEAL_WON_REQUIRES_AMOUNT")
            else:
                assert response.status_code == 200, response.text
                mine[deal_id] = response.json()
        else:
            deal_id = rng.choice(sorted(mine))
            response = await user.delete(f"/deals/{deal_id}")
            assert response.status_code == 204, response.text
            del mine[deal_id]

        stats, grouped = await running_totals(engine)
        assert stats == grouped, f"step {step}: {action}"

    for user in users:
        summary = await read(user, SUMMARY)
        assert summary["by_status"] == expected_summary(deals[user.id])
        assert summary["total"]["count"] == len(deals[user.id])
        for currency in ("USD", "EUR", "GBP"):
            filtered = await read(user, SUMMARY, currency=currency)
            assert filtered["by_status"] == expected_summary(deals[user.id], currency)


async def test_running_totals_survive_concurrent_writes(owner: User, engine: AsyncEngine) -> None:
    rng = random.Random(7)
    contact = await new_contact(owner)
    deal_ids = [(await new_deal(owner, contact, f"{i}.25"))["id"] for i in range(1, 9)]

    async def write(i: int) -> int:
        deal_id = rng.choice(deal_ids)
        if i % 10 == 9:
            return (await owner.delete(f"/deals/{deal_id}")).status_code
        if i % 5 == 0:
            body = {"contact_id": contact, "title": "More", "amount": "3.33", "currency": "EUR"}
            return (await owner.post("/deals", json=body)).status_code
        changes = {
            "status": rng.choice(STATUSES),
            "stage": rng.choice(STAGES),
            "amount": f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
            "currency": rng.choice(["USD", "EUR"]),
        }
        return (await owner.patch(f"/deals/{deal_id}", json=changes)).status_code

    codes = await asyncio.gather(*(write(i) for i in range(40)))

    assert set(codes) <= {200, 201, 204, 404}, codes
    stats, grouped = await running_totals(engine)
    assert stats == grouped
    summary = await read(owner, SUMMARY, days=2)  # a fresh cache key
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM deals WHERE organization_id = :o AND deleted_at IS NULL"),
            {"o": owner.organization_id},
        )
    assert summary["total"]["count"] == count
