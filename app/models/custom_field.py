"""Custom fields (contract section 17): an organization's definitions of extra fields on its
contacts, companies and deals. The values live on the records themselves, in their
`custom_fields` JSON column (`custom_values_column`), keyed by the definition's `key`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow
from app.models._columns import str_enum

# JSONB on PostgreSQL (indexable, numbers kept as exact numerics), JSON text on SQLite.
# A definition's key: lower-case identifier (it is also written into SQL and index names).
CUSTOM_FIELD_KEY = r"^[a-z][a-z0-9_]{0,39}$"
# The longest option of a select or multiselect (the value counts store options too).
OPTION_MAX_LENGTH = 100

JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")


class CustomFieldEntity(StrEnum):
    CONTACT = "contact"
    COMPANY = "company"
    DEAL = "deal"


class CustomFieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    MONEY = "money"
    DATE = "date"
    BOOLEAN = "boolean"
    SELECT = "select"
    MULTISELECT = "multiselect"


def custom_values_column() -> Mapped[dict[str, Any]]:
    """A record's custom field values, `{key: value}`; `{}` when it has none."""
    return mapped_column(JSON_DOCUMENT, default=dict, server_default=text("'{}'"))


class CustomFieldDefinition(Base):
    __tablename__ = "custom_field_definitions"
    __table_args__ = (UniqueConstraint("organization_id", "entity", "key"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    entity: Mapped[CustomFieldEntity] = mapped_column(
        str_enum(CustomFieldEntity, "custom_field_entity")
    )
    key: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200))
    type: Mapped[CustomFieldType] = mapped_column(str_enum(CustomFieldType, "custom_field_type"))
    # The choices of a select or multiselect, in their order; NULL for the other types.
    options: Mapped[list[str] | None] = mapped_column(JSON_DOCUMENT, default=None)
    required: Mapped[bool] = mapped_column(Boolean(), default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
