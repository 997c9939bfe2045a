from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow

# A stage key: lower-case letters, digits, `_` and `-`, starting with a letter
# (`app.schemas.pipeline.StageKey`); the deals' `stage` column holds one.
STAGE_KEY_LENGTH = 50
DEFAULT_PIPELINE_NAME = "Sales pipeline"
# The default pipeline's stages, (key, name, probability) in position order: every
# organization has it (contract section 17), and its keys are the four stages of section 6.
DEFAULT_STAGES: tuple[tuple[str, str, int], ...] = (
    ("qualification", "Qualification", 10),
    ("proposal", "Proposal", 40),
    ("negotiation", "Negotiation", 70),
    ("closed", "Closed", 100),
)

_DEFAULT_ONLY = text("is_default")


class Pipeline(Base):
    """An organization's pipeline of stages (contract section 17). Exactly one per
    organization is its default (`is_default`; a partial unique index allows no second):
    where a deal goes when none is named."""

    __tablename__ = "pipelines"
    __table_args__ = (
        # What the deals' same-organization foreign key refers to.
        UniqueConstraint("organization_id", "id"),
        Index(
            "uq_pipelines_one_default",
            "organization_id",
            unique=True,
            postgresql_where=_DEFAULT_ONLY,
            sqlite_where=_DEFAULT_ONLY,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class PipelineStage(Base):
    """A stage of a pipeline. `key` is its stable name (deals hold it in `stage`; never
    changed); `position` is its place, 0 to n-1 without gaps (kept so by the service);
    `probability` (0-100) weighs the pipeline value of the open deals at the stage."""

    __tablename__ = "pipeline_stages"
    __table_args__ = (
        # What the deals' stage foreign key refers to: a key is unique in its pipeline.
        UniqueConstraint("pipeline_id", "key"),
        ForeignKeyConstraint(
            ["organization_id", "pipeline_id"],
            ["pipelines.organization_id", "pipelines.id"],
            ondelete="CASCADE",
            name="fk_pipeline_stages_pipeline_same_org",
        ),
        CheckConstraint("probability >= 0 AND probability <= 100", name="probability_percent"),
        CheckConstraint("position >= 0", name="position_not_negative"),
        Index("ix_pipeline_stages_org_pipeline", "organization_id", "pipeline_id", "position"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigIntId)
    pipeline_id: Mapped[int] = mapped_column(BigIntId)
    key: Mapped[str] = mapped_column(String(STAGE_KEY_LENGTH))
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(SmallInteger)
    probability: Mapped[int] = mapped_column(SmallInteger)

    @property
    def rank(self) -> int:
        """Its place in its pipeline (positions are 0 to n-1): what the rollback rule
        compares, within a pipeline and across pipelines."""
        return self.position
