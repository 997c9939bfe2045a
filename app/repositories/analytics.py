"""Deal analytics: aggregates over the precomputed figures (`deal_stats`,
`deal_daily_counts`), which `app.services.read_models` keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, bindparam, func, select

from app.models import Deal, DealDailyCount, DealStat, DealStatus
from app.repositories.base import TenantRepository, live
from app.repositories.read_models import ANALYTICS_VERSION
from app.repositories.tenancy import tenant_query


@dataclass(frozen=True, slots=True)
class StatRow:
    status: DealStatus
    stage: str
    count: int
    amount: Decimal


# A cache hit needs the tenant and the analytics' data version (`app.services.read_models`):
# one statement.
TENANT_AND_VERSION = tenant_query(ANALYTICS_VERSION.scalar_subquery().label("version"))


def _created_since(currency: bool) -> Select[Any]:
    """A pipeline's deals created at or after `since`: the whole UTC days after since's day
    from `deal_daily_counts` (a few rows per day), plus the deals of since's own day from
    `since` on (an index range over one day of deals). Exact, and as cheap for a year as for
    a day."""
    days = select(func.coalesce(func.sum(DealDailyCount.deal_count), 0)).where(
        DealDailyCount.organization_id == bindparam("organization_id"),
        DealDailyCount.pipeline_id == bindparam("pipeline_id"),
        DealDailyCount.day > bindparam("since_day"),
    )
    first_day = select(func.count()).where(
        Deal.organization_id == bindparam("organization_id"),
        Deal.pipeline_id == bindparam("pipeline_id"),
        Deal.created_at >= bindparam("since"),
        Deal.created_at < bindparam("next_day"),
        live(Deal),
    )
    if currency:
        days = days.where(DealDailyCount.currency == bindparam("currency"))
        first_day = first_day.where(Deal.currency == bindparam("currency"))
    return select(days.scalar_subquery() + first_day.scalar_subquery())


# Built once each, on every uncached summary.
_CREATED_SINCE = {False: _created_since(False), True: _created_since(True)}


class AnalyticsRepository(TenantRepository):
    async def totals(self, pipeline_id: int, currency: str | None) -> Sequence[StatRow]:
        """Deal count and amount of a pipeline per (status, stage): one aggregate over a few
        dozen rows."""
        query = (
            select(
                DealStat.status,
                DealStat.stage,
                func.sum(DealStat.deal_count),
                func.sum(DealStat.amount_sum),
            )
            .where(
                DealStat.organization_id == self.organization_id,
                DealStat.pipeline_id == pipeline_id,
            )
            .group_by(DealStat.status, DealStat.stage)
        )
        if currency is not None:
            query = query.where(DealStat.currency == currency)
        rows = await self.session.execute(query)
        return [
            StatRow(status, stage, int(count or 0), amount or Decimal(0))
            for status, stage, count, amount in rows
        ]

    async def count_created_since(
        self, pipeline_id: int, since: datetime, currency: str | None
    ) -> int:
        """A pipeline's deals created at or after `since` (optionally in `currency`)."""
        since = since.astimezone(UTC)
        next_day = datetime.combine(since.date() + timedelta(days=1), time(), UTC)
        params: dict[str, object] = {
            "organization_id": self.organization_id,
            "pipeline_id": pipeline_id,
            "since": since,
            "since_day": since.date(),
            "next_day": next_day,
        }
        if currency is not None:
            params["currency"] = currency
        statement = _CREATED_SINCE[currency is not None]
        return int(await self.session.scalar(statement, params) or 0)
