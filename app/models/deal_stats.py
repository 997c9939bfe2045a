from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import BigInteger, Date, ForeignKey, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import Money
from app.models._columns import str_enum
from app.models.custom_field import OPTION_MAX_LENGTH, CustomFieldType
from app.models.enums import DealStatus
from app.models.pipeline import STAGE_KEY_LENGTH

TOTAL_PRECISION = 24
# Each bucket is split over this many rows (by deal id), so concurrent writes to one
# organization's deals mostly lock different rows instead of queueing on one.
STAT_SLOTS = 16


class DealStat(Base):
    """Running totals of deals per (organization, pipeline, currency, status, stage), each
    split over `STAT_SLOTS` rows: readers sum the slots.

    Maintained in the same transaction as every deal write (`app.services.read_models`), so
    analytics aggregate at most a few dozen rows instead of scanning every deal of an
    organization. `minicrm rebuild-stats` recomputes it from the deals table (after bulk loads)."""

    __tablename__ = "deal_stats"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key: a pipeline is deleted only when it has no deals, and its rows (all
    # zero by then) stay, since their versions are part of the organization's data version,
    # which must never go back. `rebuild` starts the organization's rows over.
    pipeline_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    status: Mapped[DealStatus] = mapped_column(
        str_enum(DealStatus, "deal_status"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(STAGE_KEY_LENGTH), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=0, server_default="0")
    deal_count: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_sum: Mapped[Decimal] = mapped_column(Money(TOTAL_PRECISION), default=Decimal(0))
    # Bumped in the writing transaction by every deal write that lands in this row (even one
    # that leaves the totals as they were, such as a new title). The sum over an organization's
    # rows is its deals' data version (see `app.services.read_models`).
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class DealDailyCount(Base):
    """Deals created per (organization, pipeline, UTC day, currency), each split over
    `STAT_SLOTS` rows (by deal id) like `DealStat`, so concurrent creations mostly lock
    different rows.

    Kept by database triggers on `deals` (migrations 0006, 0011 and 0018), in the same
    transaction as every insert, delete, trash, restore, or change of `pipeline_id`,
    `created_at` or `currency`, whatever statement makes it (the API, a bulk import, a manual
    fix): "deals created in the last N days" sums at most a few rows per day of the window
    instead of counting the deals. Rows of one day may hold
    negative counts (a deal deleted from another slot than it was counted in); only sums mean
    anything. `minicrm rebuild-stats` recomputes the table from the deals."""

    __tablename__ = "deal_daily_counts"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key, as in `DealStat`: a pipeline is deleted only when it has no deals.
    pipeline_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    deal_count: Mapped[int] = mapped_column(BigInteger)


# The custom field types whose deal values are counted (`DealValueCount`): few values each.
COUNTED_TYPES = (CustomFieldType.SELECT, CustomFieldType.BOOLEAN)


class DealValueCount(Base):
    """Live deals per (organization, custom field, value) for the deal custom fields whose
    values are few (types `select` and `boolean`), each split over `STAT_SLOTS` rows (by deal
    id) like `DealStat`.

    The exact total of a deal list filtered by one such field's value and nothing else
    (`GET /deals?cf.source=web`) is then a sum of at most 16 rows instead of a count over
    every deal holding it. Maintained in the same transaction as every deal write
    (`app.services.read_models`); a definition's rows go with it; `minicrm rebuild-stats`
    recomputes the table from the deals."""

    __tablename__ = "deal_value_counts"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The option, or `true` / `false`.
    value: Mapped[str] = mapped_column(String(OPTION_MAX_LENGTH), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    deal_count: Mapped[int] = mapped_column(BigInteger)
