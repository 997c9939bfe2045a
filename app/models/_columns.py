"""Column helpers shared by the models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.types import UTCDateTime


def str_enum(enum_cls: type[StrEnum], name: str) -> Enum:
    """A VARCHAR + CHECK column storing the enum's values (portable, no native PG enum)."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(m.value) for m in enum_cls),
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


def search_index(name: str) -> Index:
    """A trigram index over `search_text` (case-folded text the services maintain) on
    PostgreSQL, so that a `search` (a substring match) is an index scan; SQLite has none."""
    return Index(
        name,
        "search_text",
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
        info={"only_on": "postgresql"},
    ).ddl_if(dialect="postgresql")


# --- the trash (contract section 16) --------------------------------------------------------

# A record is *live* while `deleted_at` is NULL; set, it is in the trash (see
# `app.repositories.base.live`, the one place reads apply the rule).
LIVE_ONLY = text("deleted_at IS NULL")
TRASHED_ONLY = text("deleted_at IS NOT NULL")


def live_index(name: str, *columns: str) -> Index:
    """An index over live records only (partial: `WHERE deleted_at IS NULL`, on PostgreSQL and
    SQLite). The hot list and count queries all carry that condition, so they use it as
    before, and a count stays an index-only scan on PostgreSQL; trashed rows cost it nothing."""
    return Index(name, *columns, postgresql_where=LIVE_ONLY, sqlite_where=LIVE_ONLY)


def trash_index(name: str) -> Index:
    """The trash of one table, per organization, newest first (`GET /trash`, the purge): a
    small partial index over trashed rows only."""
    return Index(
        name,
        "organization_id",
        "deleted_at",
        "id",
        postgresql_where=TRASHED_ONLY,
        sqlite_where=TRASHED_ONLY,
    )


class Trashable:
    """A record that deleting moves to the trash: `deleted_at` is when (NULL: live)."""

    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
