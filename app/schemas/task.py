from __future__ import annotations

from datetime import date, datetime

from app.schemas.common import (
    Description,
    DueDate,
    Id,
    InputSchema,
    NotNullOnPatch,
    OutputSchema,
    Title,
)


class TaskCreate(InputSchema):
    deal_id: Id
    title: Title
    description: Description | None = None
    due_date: DueDate | None = None


class TaskUpdate(NotNullOnPatch):
    _not_null = ("title", "is_done")

    title: Title | None = None
    description: Description | None = None
    due_date: DueDate | None = None
    is_done: bool | None = None


class TaskRead(OutputSchema):
    id: int
    deal_id: int
    title: str
    description: str | None
    due_date: date | None
    is_done: bool
    created_at: datetime
    updated_at: datetime
