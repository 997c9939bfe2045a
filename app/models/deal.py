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
    bindparam,
    select,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import Money, UTCDateTime, utcnow
from app.models._columns import Trashable, live_index, str_enum, trash_index
from app.models.custom_field import custom_values_column
from app.models.enums import DealStage, DealStatus
from app.models.pipeline import STAGE_KEY_LENGTH, Pipeline

_DEFAULT_PIPELINE = select(Pipeline.id).where(
    Pipeline.organization_id == bindparam("organization_id"), Pipeline.is_default
)


def _default_pipeline(context: DefaultExecutionContext) -> int | None:
    """A deal inserted without a pipeline is in its organization's default one (as the
    migration put the deals that existed before pipelines). The services always name it;
    this serves bulk inserts that predate pipelines (fixtures, scripts)."""
    organization_id = context.get_current_parameters()["organization_id"]  # type: ignore[no-untyped-call]
    pipeline_id: int | None = context.connection.scalar(
        _DEFAULT_PIPELINE, {"organization_id": organization_id}
    )
    return pipeline_id


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
        # The pipeline is one of the deal's organization, and the stage one of the
        # pipeline's (keys are never renamed): the database refuses a deal on a deleted
        # stage or in another organization's pipeline, whatever writes it.
        ForeignKeyConstraint(
            ["organization_id", "pipeline_id"],
            ["pipelines.organization_id", "pipelines.id"],
            ondelete="RESTRICT",
            name="fk_deals_pipeline_same_org",
        ),
        ForeignKeyConstraint(
            ["pipeline_id", "stage"],
            ["pipeline_stages.pipeline_id", "pipeline_stages.key"],
            ondelete="RESTRICT",
            name="fk_deals_stage_in_pipeline",
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
        # Whole, not partial: a pipeline's or a stage's deals, live or in the trash (whether
        # one may be deleted, moving a stage's deals), and the foreign keys' checks.
        Index("ix_deals_org_pipeline_stage", "organization_id", "pipeline_id", "stage"),
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
    pipeline_id: Mapped[int] = mapped_column(BigIntId, default=_default_pipeline)
    # A stage key of the deal's pipeline (`fk_deals_stage_in_pipeline`).
    stage: Mapped[str] = mapped_column(
        String(STAGE_KEY_LENGTH), default=DealStage.QUALIFICATION.value
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Custom field values (contract section 17), `{key: value}`: `app.services.custom_fields`.
    custom_fields: Mapped[dict[str, Any]] = custom_values_column()
