"""Deal analytics: the running totals in `deal_stats`, and their maintenance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.models import Deal, DealStage, DealStat, DealStatus
from app.models.deal_stats import STAT_SLOTS
from app.repositories.base import TenantRepository
from app.repositories.tenancy import tenant_query


@dataclass(frozen=True, slots=True, order=True)
class StatKey:
    currency: str
    status: DealStatus
    stage: DealStage
    slot: int = 0

    @classmethod
    def of(cls, deal: Deal) -> StatKey:
        # A deal always lands in the same slot, so its own moves touch one slot's rows.
        return cls(deal.currency, deal.status, deal.stage, deal.id % STAT_SLOTS)


@dataclass(frozen=True, slots=True)
class StatRow:
    status: DealStatus
    stage: DealStage
    count: int
    amount: Decimal


_stats = DealStat.__table__.c
# Read on every analytics request (cache hits included): built once, on the table.
_VERSION = select(func.coalesce(func.sum(_stats.version), 0)).where(
    _stats.organization_id == bindparam("organization_id")
)
# A cache hit needs the tenant and the version: one statement.
TENANT_AND_VERSION = tenant_query(_VERSION.scalar_subquery().label("version"))


def _upsert(builder: Any) -> Any:
    """Add a (count, amount) delta to one running total, creating its row if needed."""
    statement = builder(DealStat.__table__).values(
        organization_id=bindparam("organization_id"),
        currency=bindparam("currency"),
        status=bindparam("status"),
        stage=bindparam("stage"),
        slot=bindparam("slot"),
        deal_count=bindparam("deal_count"),
        amount_sum=bindparam("amount_sum"),
        version=1,
    )
    return statement.on_conflict_do_update(
        index_elements=["organization_id", "currency", "status", "stage", "slot"],
        set_={
            "deal_count": _stats.deal_count + statement.excluded.deal_count,
            "amount_sum": _stats.amount_sum + statement.excluded.amount_sum,
            "version": _stats.version + 1,
        },
    )


# Every deal write runs it once or twice: built once per dialect, on the table (Core).
_UPSERT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}


class AnalyticsRepository(TenantRepository):
    async def totals(self, currency: str | None) -> Sequence[StatRow]:
        """Deal count and amount per (status, stage): one aggregate over a few dozen rows."""
        query = (
            select(
                DealStat.status,
                DealStat.stage,
                func.sum(DealStat.deal_count),
                func.sum(DealStat.amount_sum),
            )
            .where(DealStat.organization_id == self.organization_id)
            .group_by(DealStat.status, DealStat.stage)
        )
        if currency is not None:
            query = query.where(DealStat.currency == currency)
        rows = await self.session.execute(query)
        return [
            StatRow(status, stage, int(count or 0), amount or Decimal(0))
            for status, stage, count, amount in rows
        ]

    async def version(self) -> int:
        """Changes with every committed deal write (see `DealStat.version`)."""
        total = await self.session.scalar(_VERSION, {"organization_id": self.organization_id})
        return int(total or 0)

    async def count_created_since(self, since: datetime, currency: str | None) -> int:
        query = select(func.count()).where(
            Deal.organization_id == self.organization_id, Deal.created_at >= since
        )
        if currency is not None:
            query = query.where(Deal.currency == currency)
        return int(await self.session.scalar(query) or 0)

    async def apply(self, deltas: Mapping[StatKey, tuple[int, Decimal]]) -> None:
        """Add (count, amount) deltas to the running totals, and move the data version.

        A zero delta still bumps its row's version: a deal write that changes no total (a new
        title, owner or contact) must still make cached list totals stale. Keys are applied in
        sorted order, so concurrent transactions lock the rows in the same order and cannot
        deadlock on each other."""
        upsert = _UPSERT[self.session.get_bind().dialect.name]
        for key in sorted(deltas):
            count, amount = deltas[key]
            await self.session.execute(
                upsert,
                {
                    "organization_id": self.organization_id,
                    "currency": key.currency,
                    "status": key.status,
                    "stage": key.stage,
                    "slot": key.slot,
                    "deal_count": count,
                    "amount_sum": amount,
                },
            )

    async def rebuild(self) -> None:
        """Recompute this organization's totals from its deals (after bulk loads).

        The rebuilt rows start from the old version + 1, so the version still only grows."""
        previous = await self.version()
        await self.session.execute(
            delete(DealStat).where(DealStat.organization_id == self.organization_id)
        )
        await self.session.execute(
            insert(DealStat).from_select(
                ["organization_id", "currency", "status", "stage", "deal_count", "amount_sum"],
                select(
                    Deal.organization_id,
                    Deal.currency,
                    Deal.status,
                    Deal.stage,
                    func.count(),
                    func.sum(Deal.amount),
                )
                .where(Deal.organization_id == self.organization_id)
                .group_by(Deal.organization_id, Deal.currency, Deal.status, Deal.stage),
            )
        )
        # Carry the version over on one row. With no deals there are no rows and the version is
        # 0, which only an entry computed for an organization without deals can carry.
        first = (
            await self.session.execute(
                select(DealStat.currency, DealStat.status, DealStat.stage, DealStat.slot)
                .where(DealStat.organization_id == self.organization_id)
                .limit(1)
            )
        ).first()
        if first is not None:
            currency, status, stage, slot = first
            await self.session.execute(
                update(DealStat)
                .where(
                    DealStat.organization_id == self.organization_id,
                    DealStat.currency == currency,
                    DealStat.status == status,
                    DealStat.stage == stage,
                    DealStat.slot == slot,
                )
                .values(version=previous + 1)
            )
