from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, ForeignKeyConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow
from app.models._columns import Trashable, live_index, trash_index


class Task(Trashable, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["organization_id", "deal_id"],
            ["deals.organization_id", "deals.id"],
            ondelete="CASCADE",
            name="fk_tasks_deal_same_org",
        ),
        live_index("ix_tasks_org_due", "organization_id", "due_date", "id"),
        # Whole, not partial: deleting a deal cascades to its tasks through it.
        Index("ix_tasks_org_deal_due", "organization_id", "deal_id", "due_date", "id"),
        trash_index("ix_tasks_trash"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    deal_id: Mapped[int] = mapped_column(BigIntId)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    due_date: Mapped[date | None] = mapped_column(Date)
    is_done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
