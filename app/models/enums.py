from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"


class DealStatus(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    WON = "won"
    LOST = "lost"


# A deal is open until it is won or lost (a company's `open_deals_count`).
OPEN_DEAL_STATUSES = (DealStatus.NEW, DealStatus.IN_PROGRESS)


class DealStage(StrEnum):
    """Declared in pipeline order; `rank` compares positions."""

    QUALIFICATION = "qualification"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED = "closed"

    @property
    def rank(self) -> int:
        return list(DealStage).index(self)


class ActivityType(StrEnum):
    COMMENT = "comment"
    STATUS_CHANGED = "status_changed"
    STAGE_CHANGED = "stage_changed"
    TASK_CREATED = "task_created"
    SYSTEM = "system"
    # The deal was moved from a merged duplicate contact to the one it was merged into.
    CONTACT_MERGED = "contact_merged"
