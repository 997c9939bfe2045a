from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import UTCDateTime, utcnow


class SigningKey(Base):
    """A secret the deployment generated for itself, kept with its data.

    Without a configured `SECRET_KEY`, tokens are signed with the key named `tokens`: the first
    process to start generates it, and every later process and instance on the same database
    reads the same one, so tokens survive restarts and every worker accepts the others'."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
