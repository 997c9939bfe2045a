"""Webhook endpoints and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, field_validator

from app.schemas.common import InputSchema, NotNullOnPatch, OutputSchema, Safe
from app.schemas.event import MAX_TYPE_PATTERNS, split_type_patterns


def _one_pattern(value: str) -> str:
    if "," in value:
        raise ValueError("one type or pattern per item")
    split_type_patterns(value)
    return value


TypePattern = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=60),
    AfterValidator(_one_pattern),
]
EventTypeList = Annotated[
    list[TypePattern],
    Field(
        min_length=1,
        max_length=MAX_TYPE_PATTERNS,
        description="Event types (`deal.updated`) or patterns (`deal.*`, `*`), as the feed's "
        "`types` takes them.",
    ),
]
WebhookUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2048),
    Safe,
    Field(description="Where events are POSTed: `https`, resolving to public addresses only."),
]
WebhookDescription = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), Safe]


class WebhookCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/crm",
                    "event_types": ["deal.*", "task.created"],
                    "description": "Billing sync",
                }
            ]
        }
    )

    url: WebhookUrl
    event_types: EventTypeList
    description: WebhookDescription | None = None

    @field_validator("event_types")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WebhookUpdate(NotNullOnPatch):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"event_types": ["deal.*"], "description": "Deals only"}]}
    )

    _not_null = ("url", "event_types", "enabled")

    url: WebhookUrl | None = None
    event_types: EventTypeList | None = None
    description: WebhookDescription | None = None
    enabled: bool | None = None

    @field_validator("event_types")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class WebhookRead(OutputSchema):
    id: int
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the service disabled it (a whole retry schedule failed); null otherwise."
    )
    created_at: datetime
    updated_at: datetime

    @field_validator("event_types", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return value.split(",") if isinstance(value, str) else value


class WebhookCreated(WebhookRead):
    """The endpoint with its signing `secret`: shown here (and on rotation) only."""

    secret: str = Field(
        description="`whsec_` + base64 of 32 random bytes: verify each delivery's "
        "`webhook-signature` with it (Standard Webhooks)."
    )


DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookDeliveryRead(OutputSchema):
    id: int
    event_id: int = Field(description="The event's id: also the delivery's `webhook-id` header.")
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_attempt_at: datetime | None
    last_response_status: int | None = Field(description="The receiver's last HTTP status.")
    last_response_body: str | None = Field(
        description="The first 1 KiB of the receiver's last response body."
    )
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    duration_ms: int | None = Field(description="How long the last attempt took.")
    next_attempt_at: datetime | None = Field(description="When it is tried next, if pending.")
    created_at: datetime
