from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow
from app.models._columns import search_index
from app.models.custom_field import custom_values_column


class Company(Base):
    """An organization's company (contract section 17). Not trashable: deleting one deletes
    it for good (see `CompanyService.delete`), so every row is live."""

    __tablename__ = "companies"
    __table_args__ = (
        Index("ix_companies_org_created", "organization_id", "created_at", "id"),
        Index("ix_companies_org_name", "organization_id", "name", "id"),
        Index("ix_companies_org_owner", "organization_id", "owner_id", "created_at", "id"),
        search_index("ix_companies_search_trgm"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    # A host name, lower-cased (`app.schemas.company.Domain`).
    domain: Mapped[str | None] = mapped_column(String(253))
    phone: Mapped[str | None] = mapped_column(String(50))
    address: Mapped[str | None] = mapped_column(String(500))
    # Case-folded name and domain for search, maintained by the service (as contacts').
    search_text: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Custom field values (contract section 17), `{key: value}`: `app.services.custom_fields`.
    custom_fields: Mapped[dict[str, Any]] = custom_values_column()
