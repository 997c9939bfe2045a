from __future__ import annotations

from datetime import date, datetime

from pydantic import ConfigDict

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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deal_id": 1,
                    "title": "Send the proposal",
                    "description": "Include the hosting options.",
                    "due_date": "2030-01-15",
                }
            ]
        }
    )

    deal_id: Id
    title: Title
    description: Description | None = None
    due_date: DueDate | None = None


class TaskUpdate(NotNullOnPatch):
    model_config = ConfigDict(json_schema_extra={"examples": [{"is_done": True}]})

    _not_null = ("title", "is_done")

    title: Title | None = None
    description: Description | None = None
    due_date: DueDate | None = None
    is_done: bool | None = None


class TaskRead(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 5,
                    "deal_id": 7,
                    "title": "Send the proposal",
                    "description": "Include the hosting options.",
                    "due_date": "2030-01-15",
                    "is_done": False,
                    "created_at": "2026-01-15T10:00:00Z",
                    "updated_at": "2026-01-15T10:00:00Z",
                }
            ]
        }
    )

    id: int
    deal_id: int
    title: str
    description: str | None
    due_date: date | None
    is_done: bool
    created_at: datetime
    updated_at: datetime
