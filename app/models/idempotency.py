from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId
from app.db.types import UTCDateTime


class IdempotencyKey(Base):
    """The answer kept for one `Idempotency-Key`, for replaying it to a retry.

    Scoped to (credential, organization, method, path, key): a key only ever replays to the
    credential that used it, in the same organization (`0` when the route has none). Written
    in the same transaction as the write it answers (`app.api.idempotency`)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint(
            "credential",
            "organization_id",
            "method",
            "path",
            "key",
            name="uq_idempotency_keys_scope",
        ),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    # "user:<id>" or "api_key:<id>": who may replay it.
    credential: Mapped[str] = mapped_column(String(64))
    organization_id: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(512))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the request (canonical JSON body and query string): a retry must match it.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
