from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime, utcnow


class Import(Base):
    """A file of contacts or deals being imported by the background worker
    (`app.jobs.imports`).

    Progress is recorded with every batch, in the batch's own transaction: `rows_done` rows of
    the file are settled (their contacts or deals written, their errors recorded), so a worker
    that picks the job up after another died (`claimed_by` until `claimed_until`) goes on from
    there without writing a row twice."""

    __tablename__ = "imports"
    __table_args__ = (
        Index("ix_imports_org_id", "organization_id", "id"),
        # The worker's question: which jobs are waiting or running?
        Index("ix_imports_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    # Who imports: rows are created as this user (or as their API key, `api_key_id`).
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    file_format: Mapped[str] = mapped_column(String(10))
    filename: Mapped[str | None] = mapped_column(String(255))
    # The file column -> field mapping, as JSON text (null: columns are matched by name).
    mapping: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    on_conflict: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # Why the whole job failed (null while it has not, or when single rows failed).
    error: Mapped[str | None] = mapped_column(String(1000))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # How many times a worker took the job: a job that keeps killing its worker stops.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ImportFile(Base):
    """The uploaded bytes, apart from the job (lists never read them), in the database so that
    any worker process can read them; deleted when the job finishes."""

    __tablename__ = "import_files"

    import_id: Mapped[int] = mapped_column(
        ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    content: Mapped[bytes] = mapped_column(LargeBinary)


class ImportRowError(Base):
    """One row of a file that changed nothing: where (`row`, `column`) and why (`code`)."""

    __tablename__ = "import_errors"
    __table_args__ = (Index("ix_import_errors_import_row", "import_id", "row", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(Integer)
    column: Mapped[str | None] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(60))
    message: Mapped[str] = mapped_column(String(1000))
