"""Small named rules about who may touch which record; the role table is in core.permissions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Protocol

from app.core.errors import DueDateInPast, PermissionDenied, StageRollbackForbidden
from app.core.permissions import Permission
from app.core.tenancy import TenantContext


class Ranked(Protocol):
    """A stage's place in its pipeline (0: first): `DealStage`, a `PipelineStage`, ..."""

    @property
    def rank(self) -> int: ...


def ensure_can_modify(ctx: TenantContext, record_owner_id: int, what: str) -> None:
    """Managers and above modify anything; members only what they own (for a task: whose
    deal they own)."""
    if record_owner_id != ctx.user_id and not ctx.can(Permission.MODIFY_ANY_RECORD):
        raise PermissionDenied(f"Members may only change their own {what}.")


def ensure_can_move_stage(ctx: TenantContext, current: Ranked, new: Ranked) -> None:
    """Forward (even skipping stages) is open to everyone; backward needs owner or admin.

    Backward is a lower rank (position) in the pipeline. Moving to another pipeline compares
    the ranks too, so that no one rolls a deal back by hopping pipelines."""
    if new.rank < current.rank and not ctx.can(Permission.ROLLBACK_STAGE):
        raise StageRollbackForbidden()


def utc_today() -> date:
    return datetime.now(UTC).date()


def ensure_due_date_not_past(due_date: date | None) -> None:
    if due_date is not None and due_date < utc_today():
        raise DueDateInPast()
