from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow
from app.models._columns import str_enum
from app.models.enums import Role


class ApiKey(Base):
    """An organization's machine credential (`app.core.security.new_api_key`).

    Only the key's SHA-256 is stored (`key_hash`, unique: the lookup of every request made
    with it); `prefix` is the key's start, which identifies it in lists without revealing it.
    A key acts with `role` (capped by its creator's current role) and works only while its
    creator is a member of the organization (`app.repositories.tenancy`). Revoking sets
    `revoked_at`; the row stays, so timeline entries keep naming it."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_org_created", "organization_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    prefix: Mapped[str] = mapped_column(String(40))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Kept to the minute, not written by every request (`app.services.api_keys.KeyUsage`).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
