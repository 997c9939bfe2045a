from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import Money, UTCDateTime, utcnow
from app.models._columns import Trashable, live_index, str_enum, trash_index
from app.models.custom_field import custom_values_column
from app.models.enums import DealStage, DealStatus


class Deal(Trashable, Base):
    __tablename__ = "deals"
    __table_args__ = (
        UniqueConstraint("organization_id", "id"),
        ForeignKeyConstraint(
            ["organization_id", "contact_id"],
            ["contacts.organization_id", "contacts.id"],
            ondelete="RESTRICT",
            name="fk_deals_contact_same_org",
        ),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        # The list and count indexes cover live deals only (`live_index`).
        live_index("ix_deals_org_created", "organization_id", "created_at", "id"),
        # Analytics: "deals created in the last N days", optionally per currency.
        live_index("ix_deals_org_currency_created", "organization_id", "currency", "created_at"),
        live_index("ix_deals_org_updated", "organization_id", "updated_at", "id"),
        live_index("ix_deals_org_amount", "organization_id", "amount", "id"),
        live_index("ix_deals_org_title", "organization_id", "title", "id"),
        live_index("ix_deals_org_status_amount", "organization_id", "status", "amount", "id"),
        live_index("ix_deals_org_stage_created", "organization_id", "stage", "created_at", "id"),
        live_index("ix_deals_org_owner", "organization_id", "owner_id", "created_at", "id"),
        # Whole, not partial: the foreign key's check when a contact is purged reads it, and
        # the purge finds a trashed contact's deals by it.
        Index("ix_deals_org_contact", "organization_id", "contact_id"),
        trash_index("ix_deals_trash"),
        # Whole, not partial: the company's deals (its open-deal count, the list's
        # `company_id` filter), and the foreign key's check when a company is deleted.
        Index("ix_deals_company", "company_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigIntId)
    # A company of the same organization, checked by the service; a plain foreign key for
    # the reason given on `Contact.company_id`.
    company_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("companies.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    # Case-folded title for search; folding can lengthen text (ß -> ss), hence unbounded.
    search_text: Mapped[str] = mapped_column(Text())
    amount: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0.00"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    status: Mapped[DealStatus] = mapped_column(
        str_enum(DealStatus, "deal_status"), default=DealStatus.NEW
    )
    stage: Mapped[DealStage] = mapped_column(
        str_enum(DealStage, "deal_stage"), default=DealStage.QUALIFICATION
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Custom field values (contract section 17), `{key: value}`: `app.services.custom_fields`.
    custom_fields: Mapped[dict[str, Any]] = custom_values_column()
