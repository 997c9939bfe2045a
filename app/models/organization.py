from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow
from app.models._columns import str_enum
from app.models.enums import Role


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Bumped in the writing transaction by every contact write of this organization: cached
    # contact-list totals computed at another version are never served (see
    # `app.services.read_models`).
    contacts_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Bumped by every change of the organization's pipelines or stages: analytics are cached
    # under the deals' version plus this one (see `app.services.read_models`).
    pipelines_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Membership(Base):
    __tablename__ = "memberships"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
