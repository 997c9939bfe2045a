"""Events of the change feed (and, later, of webhook deliveries)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from app.schemas.common import OutputSchema


class EventType(StrEnum):
    CONTACT_CREATED = "contact.created"
    CONTACT_UPDATED = "contact.updated"
    CONTACT_DELETED = "contact.deleted"
    CONTACT_RESTORED = "contact.restored"
    COMPANY_CREATED = "company.created"
    COMPANY_UPDATED = "company.updated"
    COMPANY_DELETED = "company.deleted"
    PIPELINE_CREATED = "pipeline.created"
    PIPELINE_UPDATED = "pipeline.updated"
    PIPELINE_DELETED = "pipeline.deleted"
    CUSTOM_FIELD_CREATED = "custom_field.created"
    CUSTOM_FIELD_UPDATED = "custom_field.updated"
    CUSTOM_FIELD_DELETED = "custom_field.deleted"
    DEAL_CREATED = "deal.created"
    DEAL_UPDATED = "deal.updated"
    DEAL_DELETED = "deal.deleted"
    DEAL_RESTORED = "deal.restored"
    TASK_CREATED = "task.created"
    TASK_UPDATED = "task.updated"
    TASK_DELETED = "task.deleted"
    TASK_RESTORED = "task.restored"
    COMMENT_CREATED = "comment.created"
    MEMBER_ADDED = "member.added"
    MEMBER_UPDATED = "member.updated"
    MEMBER_REMOVED = "member.removed"
    # Webhooks: an endpoint disabled after a whole retry schedule failed; a test delivery to
    # one endpoint (`POST /webhooks/{id}/ping`), sent to that endpoint only.
    WEBHOOK_DISABLED = "webhook.disabled"
    PING = "ping"


EVENT_RESOURCES = frozenset(t.value.partition(".")[0] for t in EventType if "." in t.value)
MAX_TYPE_PATTERNS = 50


def split_type_patterns(value: str) -> list[str]:
    """The comma-separated patterns of `types`, each an exact type, `<resource>.*` or `*`;
    anything else is refused (a typo would otherwise silently match nothing)."""
    patterns = [part.strip() for part in value.split(",") if part.strip()]
    if not patterns:
        raise ValueError("give at least one event type or pattern")
    if len(patterns) > MAX_TYPE_PATTERNS:
        raise ValueError(f"at most {MAX_TYPE_PATTERNS} patterns")
    for pattern in patterns:
        resource, dot, action = pattern.partition(".")
        if pattern == "*" or pattern in EventType._value2member_map_:
            continue
        if dot and action == "*" and resource in EVENT_RESOURCES:
            continue
        raise ValueError(
            f"unknown event type or pattern {pattern!r}: use a type such as 'deal.updated', "
            f"a resource pattern such as 'deal.*' ({', '.join(sorted(EVENT_RESOURCES))}), or '*'"
        )
    return patterns


def _checked(value: str) -> str:
    split_type_patterns(value)
    return value


EventTypePatterns = Annotated[str, AfterValidator(_checked)]


class EventActor(BaseModel):
    # `system`: the service itself (`webhook.disabled`), with id 0.
    type: Literal["user", "api_key", "system"]
    id: int


class EventData(BaseModel):
    object: dict[str, Any] = Field(
        description="The resource as its GET returns it (after the change; before a delete)."
    )
    changes: dict[str, list[Any]] | None = Field(
        default=None,
        description="On `*.updated`: each changed field's `[old, new]` (`updated_at` left out).",
    )


class EventRead(OutputSchema):
    id: int
    # A string listing today's types rather than an enum: a client generated now must still
    # read an event of a type added later (generators make an enum a closed type).
    type: str = Field(
        description="What happened, `<resource>.<change>`: "
        + ", ".join(f"`{t.value}`" for t in EventType)
        + ". New versions may add types: skip the ones you do not handle.",
        examples=[t.value for t in EventType],
    )
    occurred_at: datetime
    organization_id: int
    actor: EventActor
    data: EventData


class EventFeedPage(BaseModel):
    items: list[EventRead]
    next_cursor: str = Field(
        description="Pass as `after` to continue; never null: at the end it waits at the end, "
        "so polling with it returns only newer events."
    )
