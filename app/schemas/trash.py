"""The trash: records deleted within the retention period (`TRASH_RETENTION_DAYS`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from app.schemas.common import OutputSchema
from app.schemas.contact import ContactRead
from app.schemas.deal import DealRead
from app.schemas.task import TaskRead


class TrashType(StrEnum):
    CONTACT = "contact"
    DEAL = "deal"
    TASK = "task"


class TrashItem(OutputSchema):
    type: TrashType
    id: int
    deleted_at: datetime = Field(description="When it was deleted (moved to the trash).")
    purge_at: datetime = Field(
        description="When it will be deleted for good (`deleted_at` + `TRASH_RETENTION_DAYS`)."
    )
    object: ContactRead | DealRead | TaskRead = Field(
        description="The record as its GET answered it before it was deleted."
    )
