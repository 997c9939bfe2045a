"""Summary and funnel of a pipeline's deals (the default pipeline unless one is named):
aggregated in SQL from the running totals, cached per organization
(`app.services.read_models`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.errors import PipelineNotFound
from app.core.tenancy import AnyCaller, TenantContext
from app.models import OPEN_DEAL_STATUSES, DealStatus, PipelineStage
from app.repositories.analytics import TENANT_AND_VERSION, AnalyticsRepository, StatRow
from app.repositories.pipelines import PipelineRepository
from app.schemas.analytics import (
    CountsByStatus,
    DealFunnel,
    DealSummary,
    FunnelStage,
    StatusTotals,
    TotalsByStatus,
)
from app.services.read_models import ReadModels, funnel_key, summary_key
from app.services.tenancy import resolve_tenant

_CENT = Decimal("0.01")


def build_summary(
    rows: Sequence[StatRow], stages: Sequence[PipelineStage], new_deals: int, days: int
) -> DealSummary:
    counts = dict.fromkeys(DealStatus, 0)
    amounts = dict.fromkeys(DealStatus, Decimal(0))
    probabilities = {stage.key: stage.probability for stage in stages}
    weighted = Decimal(0)  # amount x probability, summed; divided by 100 once, at the end
    for row in rows:
        counts[row.status] += row.count
        amounts[row.status] += row.amount
        if row.status in OPEN_DEAL_STATUSES:
            weighted += row.amount * probabilities.get(row.stage, 0)
    won_count = counts[DealStatus.WON]
    avg_won = (
        (amounts[DealStatus.WON] / won_count).quantize(_CENT, ROUND_HALF_UP)
        if won_count
        else Decimal(0)
    )
    return DealSummary(
        by_status=TotalsByStatus.model_validate(
            {
                status.value: StatusTotals(count=counts[status], total_amount=amounts[status])
                for status in DealStatus
            }
        ),
        total=StatusTotals(count=sum(counts.values()), total_amount=sum(amounts.values())),
        avg_won_amount=avg_won,
        weighted_pipeline_value=(weighted / 100).quantize(_CENT, ROUND_HALF_UP),
        new_deals_last_n_days=new_deals,
        days=days,
    )


def build_funnel(rows: Sequence[StatRow], pipeline_stages: Sequence[PipelineStage]) -> DealFunnel:
    by_stage = {stage.key: dict.fromkeys(DealStatus, 0) for stage in pipeline_stages}
    for row in rows:
        if row.stage in by_stage:  # (a deleted stage's rows went to another one)
            by_stage[row.stage][row.status] += row.count
    stages: list[FunnelStage] = []
    reached = sum(sum(statuses.values()) for statuses in by_stage.values())
    previous_reached: int | None = None
    for stage in (s.key for s in pipeline_stages):  # position order
        count = sum(by_stage[stage].values())
        conversion = None
        if previous_reached:
            # Exact decimal arithmetic, half-up: 1/8 -> 12.5, 1/6 -> 16.67, 1/400 -> 0.25.
            conversion = float(
                (Decimal(reached * 100) / previous_reached).quantize(_CENT, ROUND_HALF_UP)
            )
        stages.append(
            FunnelStage(
                stage=stage,
                count=count,
                by_status=CountsByStatus.model_validate(
                    {status.value: n for status, n in by_stage[stage].items()}
                ),
                reached=reached,
                conversion_from_prev=conversion,
            )
        )
        previous_reached = reached
        reached -= count
    return DealFunnel(stages=stages)


class AnalyticsService:
    def __init__(
        self, session: AsyncSession, ctx: TenantContext, cache: Cache, version: int
    ) -> None:
        self.ctx = ctx
        self.analytics = AnalyticsRepository(session, ctx.organization_id)
        self.pipelines = PipelineRepository(session, ctx.organization_id)
        self.read_models = ReadModels(session, ctx.organization_id, cache)
        # Read before anything is computed: figures computed afterwards are at least as fresh.
        self.version = version

    @classmethod
    async def open(
        cls, session: AsyncSession, caller: AnyCaller, organization_id: int, cache: Cache
    ) -> AnalyticsService:
        """Resolve the tenant and read the data version in one statement, so a cache hit costs
        a single round trip to the database. The tenant is still resolved on every request."""
        ctx, row = await resolve_tenant(session, caller, organization_id, TENANT_AND_VERSION)
        return cls(session, ctx, cache, int(row.version))

    async def summary(
        self, pipeline_id: int | None, days: int, currency: str | None
    ) -> tuple[DealSummary, bool]:
        """A pipeline's figures (None: the default pipeline's). A cached entry is only ever
        stored for a pipeline that was found, under a version every pipeline change moves:
        a hit needs no check that the pipeline exists."""

        async def compute() -> dict[str, Any]:
            found, stages = await self._pipeline(pipeline_id)
            rows = await self.analytics.totals(found, currency)
            since = datetime.now(UTC) - timedelta(days=days)
            new_deals = await self.analytics.count_created_since(found, since, currency)
            return build_summary(rows, stages, new_deals, days).model_dump(mode="json")

        value, hit = await self.read_models.analytics(
            summary_key(pipeline_id, days, currency), self.version, compute
        )
        return DealSummary.model_validate(value), hit

    async def funnel(
        self, pipeline_id: int | None, currency: str | None
    ) -> tuple[DealFunnel, bool]:
        async def compute() -> dict[str, Any]:
            found, stages = await self._pipeline(pipeline_id)
            rows = await self.analytics.totals(found, currency)
            return build_funnel(rows, stages).model_dump(mode="json")

        value, hit = await self.read_models.analytics(
            funnel_key(pipeline_id, currency), self.version, compute
        )
        return DealFunnel.model_validate(value), hit

    async def _pipeline(self, pipeline_id: int | None) -> tuple[int, list[PipelineStage]]:
        """The pipeline (None: the default) and its stages; 404 for none of this
        organization."""
        pipeline = (
            await self.pipelines.default()
            if pipeline_id is None
            else await self.pipelines.get(pipeline_id)
        )
        if pipeline is None:
            raise PipelineNotFound()
        return pipeline.id, (await self.pipelines.stages([pipeline.id]))[pipeline.id]
