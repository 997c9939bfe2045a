from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow


class Event(Base):
    """One committed change, appended in the transaction that made it (the outbox).

    Ids grow in commit order within an organization (see `app.services.events`), so a reader
    that follows `(organization_id, id)` sees every event once, in order: the change feed and
    the webhook delivery both read this table that way."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_org_id", "organization_id", "id"),
        Index("ix_events_occurred_at", "occurred_at"),
        # SQLite reuses the highest rowid once it is deleted; AUTOINCREMENT never reuses one,
        # so a pruned (or emptied) table never hands out an id a cursor has already passed.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(20))
    # A user's or an API key's id; no foreign key: the event outlives both.
    actor_id: Mapped[int] = mapped_column(BigInteger)
    # `{"object": ..., "changes": ...}` as JSON text, rendered once when the change was made:
    # the feed and webhook deliveries send these bytes without parsing them again.
    data: Mapped[str] = mapped_column(Text)


class EventPruneMark(Base):
    """How far an organization's events have been pruned: every event with an id up to
    `pruned_through_id` is gone, so a cursor before it would skip events (410)."""

    __tablename__ = "event_prune_marks"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    pruned_through_id: Mapped[int] = mapped_column(BigInteger)
    pruned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
