from __future__ import annotations

from app.models.enums import DealStage, DealStatus
from app.schemas.common import MoneyOut, OutputSchema


class StatusTotals(OutputSchema):
    count: int
    total_amount: MoneyOut


class DealSummary(OutputSchema):
    by_status: dict[DealStatus, StatusTotals]
    total: StatusTotals
    avg_won_amount: MoneyOut
    new_deals_last_n_days: int
    days: int


class FunnelStage(OutputSchema):
    stage: DealStage
    count: int
    by_status: dict[DealStatus, int]
    reached: int
    conversion_from_prev: float | None


class DealFunnel(OutputSchema):
    stages: list[FunnelStage]
