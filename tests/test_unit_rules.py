"""Pure rules, no database and no app: stage order, the role table, the record policies, text
folding, the money column type, deal input validation and the in-process analytics cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import BigInteger, Numeric
from sqlalchemy.dialects import postgresql, sqlite

from app.core.cache import MemoryCache, cached
from app.core.errors import DueDateInPast, PermissionDenied, StageRollbackForbidden
from app.core.permissions import ROLE_PERMISSIONS, Permission, capped, has_permission, is_above
from app.core.security import api_key_organization, hash_api_key, new_api_key
from app.core.tenancy import TenantContext
from app.core.text import fold
from app.db.types import Money
from app.models.enums import DealStage, Role
from app.schemas.deal import DealCreate
from app.services import policies
from app.services.policies import (
    ensure_can_modify,
    ensure_can_move_stage,
    ensure_due_date_not_past,
)

# --- stage order -------------------------------------------------------------------------


def test_stage_rank_follows_the_pipeline() -> None:
    pipeline = ["qualification", "proposal", "negotiation", "closed"]
    assert [DealStage(name).rank for name in pipeline] == [0, 1, 2, 3]
    assert [s.value for s in sorted(DealStage, key=lambda s: s.rank)] == pipeline
    assert DealStage.QUALIFICATION.rank < DealStage.PROPOSAL.rank
    assert DealStage.PROPOSAL.rank < DealStage.NEGOTIATION.rank
    assert DealStage.NEGOTIATION.rank < DealStage.CLOSED.rank


# --- the role table (CONTRACT section 3) -------------------------------------------------

P = Permission
EXPECTED_PERMISSIONS: dict[Role, set[Permission]] = {
    Role.OWNER: {
        P.READ,
        P.CREATE,
        P.COMMENT,
        P.MODIFY_ANY_RECORD,
        P.REASSIGN_OWNER,
        P.ROLLBACK_STAGE,
        P.MANAGE_ORGANIZATION,
        P.MANAGE_MEMBERS,
        P.LEAVE_ORGANIZATION,
        P.MANAGE_API_KEYS,
        P.MANAGE_WEBHOOKS,
        P.WEBHOOK_SECRETS,
        P.MANAGE_CUSTOM_FIELDS,
        P.GRANT_ADMIN,
    },
    Role.ADMIN: {
        P.READ,
        P.CREATE,
        P.COMMENT,
        P.MODIFY_ANY_RECORD,
        P.REASSIGN_OWNER,
        P.ROLLBACK_STAGE,
        P.MANAGE_ORGANIZATION,
        P.MANAGE_MEMBERS,
        P.LEAVE_ORGANIZATION,
        P.MANAGE_API_KEYS,
        P.MANAGE_WEBHOOKS,
        P.WEBHOOK_SECRETS,
        P.MANAGE_CUSTOM_FIELDS,
    },
    Role.MANAGER: {
        P.READ,
        P.CREATE,
        P.COMMENT,
        P.LEAVE_ORGANIZATION,
        P.MODIFY_ANY_RECORD,
        P.REASSIGN_OWNER,
    },
    Role.MEMBER: {P.READ, P.CREATE, P.COMMENT, P.LEAVE_ORGANIZATION},
}


@pytest.mark.parametrize("role", list(Role))
def test_role_permissions_match_the_contract_table(role: Role) -> None:
    assert set(ROLE_PERMISSIONS[role]) == EXPECTED_PERMISSIONS[role]
    for permission in Permission:
        expected = permission in EXPECTED_PERMISSIONS[role]
        assert has_permission(role, permission) is expected, (role, permission)
        ctx = TenantContext(user_id=1, organization_id=1, role=role)
        assert ctx.can(permission) is expected, (role, permission)


@pytest.mark.parametrize("role", list(Role))
def test_an_api_key_has_its_roles_permissions_except_what_only_people_may_do(role: Role) -> None:
    key = TenantContext(user_id=1, organization_id=1, role=role, api_key_id=9)
    people_only = {
        P.MANAGE_MEMBERS,
        P.LEAVE_ORGANIZATION,
        P.MANAGE_API_KEYS,
        P.GRANT_ADMIN,
        P.WEBHOOK_SECRETS,
    }
    for permission in Permission:
        expected = permission in EXPECTED_PERMISSIONS[role] and permission not in people_only
        assert key.can(permission) is expected, (role, permission)
    assert key.actor == {"type": "api_key", "id": 9}
    assert key.credential == "api_key:9"
    person = TenantContext(user_id=1, organization_id=1, role=role)
    assert person.actor == {"type": "user", "id": 1}
    assert person.credential == "user:1"


def test_a_key_role_is_capped_by_its_creators() -> None:
    assert capped(Role.ADMIN, Role.OWNER) is Role.ADMIN
    assert capped(Role.ADMIN, Role.MEMBER) is Role.MEMBER
    assert capped(Role.MANAGER, Role.ADMIN) is Role.MANAGER
    assert is_above(Role.ADMIN, Role.MANAGER)
    assert not is_above(Role.ADMIN, Role.ADMIN)


def test_api_keys_carry_their_organization_and_are_stored_as_a_hash() -> None:
    issued = new_api_key(42)
    assert issued.key.startswith("mcrm_42_")
    assert issued.key.startswith(issued.prefix)
    assert api_key_organization(issued.key) == 42
    assert issued.key_hash == hash_api_key(issued.key) != issued.key
    assert new_api_key(42).key != issued.key
    for malformed in ("mcrm_", "mcrm__x", "mcrm_42", "mcrm_-1_x", "mcrm_0_x", "xmcrm_1_x"):
        assert api_key_organization(malformed) is None, malformed
    assert api_key_organization("mcrm_" + "9" * 20 + "_x") is None


def test_every_role_has_an_entry_and_roles_are_nested() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    order = [Role.MEMBER, Role.MANAGER, Role.ADMIN, Role.OWNER]
    for lower, higher in pairwise(order):
        assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher], (lower, higher)


def test_require_raises_403_for_a_missing_permission() -> None:
    member = TenantContext(user_id=1, organization_id=1, role=Role.MEMBER)
    member.require(Permission.COMMENT)
    with pytest.raises(PermissionDenied) as raised:
        member.require(Permission.MANAGE_ORGANIZATION)
    assert raised.value.status == 403


# --- policies ----------------------------------------------------------------------------


def ctx(role: Role, user_id: int = 7) -> TenantContext:
    return TenantContext(user_id=user_id, organization_id=1, role=role)


@pytest.mark.parametrize("role", list(Role))
def test_everyone_may_modify_their_own_records(role: Role) -> None:
    ensure_can_modify(ctx(role, user_id=7), 7, "deals")


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.MANAGER])
def test_manager_and_above_may_modify_others_records(role: Role) -> None:
    ensure_can_modify(ctx(role, user_id=7), 8, "deals")


def test_member_may_not_modify_others_records() -> None:
    with pytest.raises(PermissionDenied) as raised:
        ensure_can_modify(ctx(Role.MEMBER, user_id=7), 8, "deals' tasks")
    assert raised.value.status == 403
    assert "deals' tasks" in raised.value.detail


@pytest.mark.parametrize("role", list(Role))
def test_anyone_may_move_a_stage_forward_or_keep_it(role: Role) -> None:
    for current in DealStage:
        for new in DealStage:
            if new.rank >= current.rank:
                ensure_can_move_stage(ctx(role), current, new)


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owner_and_admin_may_move_a_stage_back(role: Role) -> None:
    ensure_can_move_stage(ctx(role), DealStage.CLOSED, DealStage.QUALIFICATION)
    ensure_can_move_stage(ctx(role), DealStage.PROPOSAL, DealStage.QUALIFICATION)


@pytest.mark.parametrize("role", [Role.MANAGER, Role.MEMBER])
def test_manager_and_member_may_not_move_a_stage_back(role: Role) -> None:
    for current in DealStage:
        for new in DealStage:
            if new.rank < current.rank:
                with pytest.raises(StageRollbackForbidden) as raised:
                    ensure_can_move_stage(ctx(role), current, new)
                assert raised.value.status == 403
                assert raised.value.code == "STAGE_ROLLBACK_FORBIDDEN"


def test_due_date_today_or_later_or_none_is_accepted() -> None:
    today = datetime.now(UTC).date()
    ensure_due_date_not_past(today)
    ensure_due_date_not_past(today + timedelta(days=1))
    ensure_due_date_not_past(None)


def test_due_date_yesterday_is_refused() -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with pytest.raises(DueDateInPast) as raised:
        ensure_due_date_not_past(yesterday)
    assert raised.value.status == 400
    assert raised.value.code == "DUE_DATE_IN_PAST"


def test_due_date_rule_uses_the_utc_calendar_day(monkeypatch: pytest.MonkeyPatch) -> None:
    assert policies.utc_today() == datetime.now(UTC).date()
    monkeypatch.setattr(policies, "utc_today", lambda: date(2024, 3, 1))
    ensure_due_date_not_past(date(2024, 3, 1))
    with pytest.raises(DueDateInPast):
        ensure_due_date_not_past(date(2024, 2, 29))


# --- text folding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upper", "lower"),
    [
        ("MÜLLER", "müller"),
        ("ИВАН", "иван"),
        ("Straße", "STRASSE"),
        ("Mu\u0308ller", "MÜLLER"),  # decomposed and composed umlaut
    ],
)
def test_fold_makes_case_variants_equal(upper: str, lower: str) -> None:
    assert fold(upper) == fold(lower)


def test_fold_keeps_different_text_different() -> None:
    assert fold("müller") != fold("muller")
    assert fold("иван") != fold("ivan")
    assert "ива" in fold("ИВАН ПЕТРОВ")


# --- money column ------------------------------------------------------------------------

SQLITE = sqlite.dialect()
POSTGRES = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("given", "stored_sqlite", "expected"),
    [
        (Decimal("12.34"), 1234, "12.34"),
        (Decimal("5.5"), 550, "5.50"),
        (7, 700, "7.00"),
        (Decimal("0"), 0, "0.00"),
        (Decimal("0.01"), 1, "0.01"),
        (Decimal("999999999999.99"), 99999999999999, "999999999999.99"),
    ],
)
def test_money_round_trips_exactly_on_both_dialects(
    given: Decimal | int, stored_sqlite: int, expected: str
) -> None:
    money = Money()

    bound = money.process_bind_param(given, SQLITE)
    assert bound == stored_sqlite
    assert isinstance(bound, int)
    back = money.process_result_value(bound, SQLITE)
    assert isinstance(back, Decimal)
    assert str(back) == expected

    bound_pg = money.process_bind_param(given, POSTGRES)
    assert isinstance(bound_pg, Decimal)
    assert str(bound_pg) == expected
    back_pg = money.process_result_value(bound_pg, POSTGRES)
    assert isinstance(back_pg, Decimal)
    assert str(back_pg) == expected


def test_money_none_stays_none() -> None:
    money = Money()
    for dialect in (SQLITE, POSTGRES):
        assert money.process_bind_param(None, dialect) is None
        assert money.process_result_value(None, dialect) is None


def test_money_sums_of_cents_are_exact_on_sqlite() -> None:
    money = Money()
    cents = sum(money.process_bind_param(Decimal("0.10"), SQLITE) for _ in range(10))
    assert str(money.process_result_value(cents, SQLITE)) == "1.00"


def test_money_column_types() -> None:
    money = Money()
    assert isinstance(money.load_dialect_impl(SQLITE), BigInteger)
    numeric = money.load_dialect_impl(POSTGRES)
    assert isinstance(numeric, Numeric)
    assert (numeric.precision, numeric.scale) == (14, 2)


# --- deal input --------------------------------------------------------------------------


def deal(**fields: Any) -> DealCreate:
    return DealCreate.model_validate({"contact_id": 1, "title": "Deal", **fields})


def test_deal_defaults() -> None:
    created = deal()
    assert created.amount == Decimal("0")
    assert created.currency == "USD"


@pytest.mark.parametrize(
    ("given", "expected"), [("usd", "USD"), ("eur", "EUR"), (" Gbp ", "GBP"), ("JPY", "JPY")]
)
def test_deal_currency_is_upper_cased(given: str, expected: str) -> None:
    assert deal(currency=given).currency == expected


@pytest.mark.parametrize("currency", ["ABC", "QQQ", "US", "USDD", "", "12$", "€", None, 840])
def test_deal_currency_must_be_iso_4217(currency: Any) -> None:
    with pytest.raises(ValidationError):
        deal(currency=currency)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("12.34", "12.34"),
        (12.5, "12.5"),
        (0, "0"),
        ("0.10", "0.10"),
        ("999999999999.99", "999999999999.99"),
        ("-0", "0"),
    ],
)
def test_deal_amount_accepts_exact_non_negative_money(given: Any, expected: str) -> None:
    amount = deal(amount=given).amount
    assert isinstance(amount, Decimal)
    assert amount == Decimal(expected)
    assert not amount.is_signed()


@pytest.mark.parametrize(
    "amount",
    ["-0.01", -1, "1.234", 0.001, "1000000000000", "1e13", "NaN", "Infinity", "abc", None],
)
def test_deal_amount_rejects_invalid_values(amount: Any) -> None:
    with pytest.raises(ValidationError):
        deal(amount=amount)


@pytest.mark.parametrize(
    "extra", [{"owner_id": 2}, {"organization_id": 2}, {"status": "won"}, {"stage": "closed"}]
)
def test_deal_create_rejects_fields_it_does_not_take(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        deal(**extra)


# --- in-process cache --------------------------------------------------------------------


async def test_memory_cache_miss_then_hit_per_organization_key_and_version() -> None:
    cache = MemoryCache(ttl_seconds=60)

    assert await cache.get(1, "summary", 0) is None
    await cache.set(1, "summary", 0, {"total": 3})

    assert await cache.get(1, "summary", 0) == {"total": 3}
    assert await cache.get(1, "summary", 1) is None  # the data moved on: never served
    assert await cache.get(1, "funnel", 0) is None
    assert await cache.get(2, "summary", 0) is None


async def test_memory_cache_entries_expire_after_the_ttl() -> None:
    cache = MemoryCache(ttl_seconds=0.3)
    await cache.set(1, "k", 0, "v")
    assert await cache.get(1, "k", 0) == "v"

    await asyncio.sleep(0.4)

    assert await cache.get(1, "k", 0) is None


async def test_memory_cache_invalidate_drops_only_that_organization() -> None:
    cache = MemoryCache(ttl_seconds=60)
    await cache.set(1, "k", 0, "old")
    await cache.set(2, "k", 0, "other org")

    await cache.invalidate(1)

    assert await cache.get(1, "k", 0) is None
    assert await cache.get(2, "k", 0) == "other org"


async def test_memory_cache_keeps_the_newer_version_when_a_late_reader_stores() -> None:
    cache = MemoryCache(ttl_seconds=60)
    await cache.set(1, "k", 5, "computed from new data")
    await cache.set(1, "k", 4, "computed from old data")  # a slow reader finishing late

    assert await cache.get(1, "k", 5) == "computed from new data"
    assert await cache.get(1, "k", 4) is None


async def test_cached_computes_once_until_invalidated_or_the_version_moves() -> None:
    cache = MemoryCache(ttl_seconds=60)
    calls: list[int] = []

    async def compute() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert await cached(cache, 1, "k", 0, compute) == ({"n": 1}, False)
    assert await cached(cache, 1, "k", 0, compute) == ({"n": 1}, True)
    await cache.invalidate(1)
    assert await cached(cache, 1, "k", 0, compute) == ({"n": 2}, False)
    assert await cached(cache, 1, "k", 1, compute) == ({"n": 3}, False)
    assert len(calls) == 3
