from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow
from app.models._columns import LIVE_ONLY, Trashable, live_index, search_index, trash_index
from app.models.custom_field import custom_values_column


class Contact(Trashable, Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # Target of the deals' composite foreign key: a deal can only point at a contact of
        # its own organization, enforced by the database itself.
        UniqueConstraint("organization_id", "id"),
        live_index("ix_contacts_org_created", "organization_id", "created_at", "id"),
        live_index("ix_contacts_org_name", "organization_id", "name", "id"),
        live_index("ix_contacts_org_owner", "organization_id", "owner_id", "created_at", "id"),
        trash_index("ix_contacts_trash"),
        # Whole, not partial (see `company_id`): the company's contacts (its count, the
        # list's `company_id` filter), and the foreign key's check when a company is deleted.
        Index("ix_contacts_company", "company_id", "created_at", "id"),
        # Duplicates (`GET /contacts/duplicates`): groups of equal keys in one organization.
        Index("ix_contacts_org_email_key", "organization_id", "email_key", "id"),
        Index("ix_contacts_org_phone_key", "organization_id", "phone_key", "id"),
        search_index("ix_contacts_search_trgm"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    # A company of the same organization (the service checks it: `CompanyRepository` only
    # finds the organization's own). A plain foreign key, not one on (organization_id,
    # company_id) as deals have for their contact: SQLite can add a column with a foreign key
    # to an existing table but not a table constraint, short of rebuilding the table, and
    # rebuilding `contacts` would cascade into every table that refers to it. No ON DELETE
    # action: the database refuses to delete a company anything still refers to
    # (`CompanyService.delete` clears or refuses the references first).
    company_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("companies.id"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(50))
    # Case-folded name/email/phone, maintained by the service: `lower()` and `LIKE` in SQLite
    # fold ASCII only, so Unicode-aware matching is done on a folded copy on every database.
    # Unbounded: folding can lengthen text (ß -> ss).
    search_text: Mapped[str] = mapped_column(Text())
    # Normalised email and phone, maintained by the service: two contacts with an equal key
    # are duplicates (`app.core.contact_keys`).
    email_key: Mapped[str | None] = mapped_column(Text())
    phone_key: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Custom field values (contract section 17), `{key: value}`: `app.services.custom_fields`.
    custom_fields: Mapped[dict[str, Any]] = custom_values_column()


# Imports upsert by email, case-insensitively: one lookup per batch of rows (of live contacts).
Index(
    "ix_contacts_org_email_lower",
    Contact.organization_id,
    func.lower(Contact.email),
    postgresql_where=LIVE_ONLY,
    sqlite_where=LIVE_ONLY,
)
