from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, computed_field

from app.core.tenancy import Actor
from app.models.enums import ActivityType
from app.schemas.common import InputSchema, LongText, OutputSchema

CommentText = LongText


class CommentPayload(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"text": "Call went well: they want a quote by Friday."}]}
    )

    text: CommentText


class ActivityCreate(InputSchema):
    """Clients may only add comments; every other type is written by the service itself."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "comment",
                    "payload": {"text": "Call went well: they want a quote by Friday."},
                }
            ]
        }
    )

    type: Literal[ActivityType.COMMENT]
    payload: CommentPayload


class ActivityRead(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 11,
                    "deal_id": 7,
                    "author_id": 1,
                    "actor": {"type": "user", "id": 1},
                    "type": "status_changed",
                    "payload": {"old_status": "new", "new_status": "in_progress"},
                    "created_at": "2026-01-15T10:00:00Z",
                }
            ]
        }
    )

    id: int
    deal_id: int
    author_id: int | None
    type: ActivityType
    payload: dict[str, Any]
    created_at: datetime
    api_key_id: int | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def actor(self) -> Actor | None:
        """Who made the entry: `{"type": "api_key", "id": …}` when an API key did (then
        `author_id` is the key's creator), else `{"type": "user", "id": author_id}`; null when
        the author's account is gone."""
        if self.api_key_id is not None:
            return {"type": "api_key", "id": self.api_key_id}
        if self.author_id is not None:
            return {"type": "user", "id": self.author_id}
        return None
