from __future__ import annotations

from pydantic import ConfigDict, Field

from app.schemas.common import MoneyOut, OutputSchema
from app.schemas.pipeline import DealStageKey

# `by_status` objects name every status as a property (not a map keyed by status), so generated
# clients keep the keys as typed fields; a test keeps these in step with `DealStatus`.


class StatusTotals(OutputSchema):
    count: int
    total_amount: MoneyOut


class TotalsByStatus(OutputSchema):
    new: StatusTotals
    in_progress: StatusTotals
    won: StatusTotals
    lost: StatusTotals


class CountsByStatus(OutputSchema):
    new: int
    in_progress: int
    won: int
    lost: int


class DealSummary(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "by_status": {
                        "new": {"count": 4, "total_amount": 8000.0},
                        "in_progress": {"count": 2, "total_amount": 25000.0},
                        "won": {"count": 3, "total_amount": 31500.5},
                        "lost": {"count": 1, "total_amount": 900.0},
                    },
                    "total": {"count": 10, "total_amount": 65400.5},
                    "avg_won_amount": 10500.17,
                    "weighted_pipeline_value": 10800.0,
                    "new_deals_last_n_days": 6,
                    "days": 30,
                }
            ]
        }
    )

    by_status: TotalsByStatus
    total: StatusTotals
    avg_won_amount: MoneyOut
    weighted_pipeline_value: MoneyOut = Field(
        description="The open deals' (`new`, `in_progress`) amounts, each weighed by its "
        "stage's `probability` (percent): the sum of amount x probability / 100, exact, "
        "rounded half-up to cents. Across currencies unless `currency` is given."
    )
    new_deals_last_n_days: int = Field(
        description="The pipeline's deals created in the last `days` days (any status)."
    )
    days: int


class FunnelStage(OutputSchema):
    stage: DealStageKey
    count: int
    by_status: CountsByStatus
    reached: int
    conversion_from_prev: float | None


class DealFunnel(OutputSchema):
    stages: list[FunnelStage]
