"""Every model, imported so `Base.metadata` is complete (Alembic reads it from here)."""

from app.db.base import Base
from app.models.activity import Activity
from app.models.api_key import ApiKey
from app.models.company import Company
from app.models.contact import Contact
from app.models.custom_field import CustomFieldDefinition, CustomFieldEntity, CustomFieldType
from app.models.deal import Deal
from app.models.deal_stats import DealDailyCount, DealStat, DealValueCount
from app.models.enums import OPEN_DEAL_STATUSES, ActivityType, DealStage, DealStatus, Role
from app.models.event import Event, EventPruneMark
from app.models.idempotency import IdempotencyKey
from app.models.imports import Import, ImportFile, ImportRowError
from app.models.organization import Membership, Organization
from app.models.pipeline import Pipeline, PipelineStage
from app.models.signing_key import SigningKey
from app.models.task import Task
from app.models.user import AuthSession, RefreshToken, User
from app.models.webhook import WebhookDelivery, WebhookEndpoint

__all__ = [
    "OPEN_DEAL_STATUSES",
    "Activity",
    "ActivityType",
    "ApiKey",
    "AuthSession",
    "Base",
    "Company",
    "Contact",
    "CustomFieldDefinition",
    "CustomFieldEntity",
    "CustomFieldType",
    "Deal",
    "DealDailyCount",
    "DealStage",
    "DealStat",
    "DealStatus",
    "DealValueCount",
    "Event",
    "EventPruneMark",
    "IdempotencyKey",
    "Import",
    "ImportFile",
    "ImportRowError",
    "Membership",
    "Organization",
    "Pipeline",
    "PipelineStage",
    "RefreshToken",
    "Role",
    "SigningKey",
    "Task",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
]
