"""Import jobs: the tenant's reads and writes (`ImportRepository`), and the worker's lease
and progress (module functions, across organizations, like the webhook outbox's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Import, ImportFile, ImportRowError
from app.repositories.base import TenantRepository
from app.schemas.common import PageParams
from app.schemas.imports import ImportStatus

imports = cast(Table, Import.__table__)
files = cast(Table, ImportFile.__table__)
row_errors = cast(Table, ImportRowError.__table__)

_ACTIVE = (ImportStatus.QUEUED.value, ImportStatus.RUNNING.value)


class ImportRepository(TenantRepository):
    async def add(self, job: Import, content: bytes) -> Import:
        job.organization_id = self.organization_id
        self.session.add(job)
        await self.session.flush()
        await self.session.execute(insert(files).values(import_id=job.id, content=content))
        return job

    async def get(self, import_id: int, *, lock: bool = False) -> Import | None:
        query = select(Import).where(
            Import.organization_id == self.organization_id, Import.id == import_id
        )
        if lock:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def list(self, page: PageParams) -> tuple[Sequence[Import], int]:
        query = (
            select(Import)
            .where(Import.organization_id == self.organization_id)
            .order_by(Import.id.desc())
        )
        return await self.paginate(query, page)

    async def errors(self, import_id: int, page: PageParams) -> tuple[Sequence[Any], int]:
        """A page of the import's row errors, by row (the import is this organization's:
        checked by the caller)."""
        query = (
            select(ImportRowError)
            .where(ImportRowError.import_id == import_id)
            .order_by(ImportRowError.row, ImportRowError.id)
        )
        return await self.paginate(query, page)

    async def first_errors(self, import_id: int, limit: int) -> Sequence[ImportRowError]:
        rows = await self.session.scalars(
            select(ImportRowError)
            .where(ImportRowError.import_id == import_id)
            .order_by(ImportRowError.row, ImportRowError.id)
            .limit(limit)
        )
        return rows.all()

    async def finish(self, job: Import, status: ImportStatus, now: datetime) -> None:
        job.status = status.value
        job.finished_at = now
        job.claimed_by = None
        job.claimed_until = None
        await self.session.flush()
        await self.session.execute(delete(files).where(files.c.import_id == job.id))


# --- the worker ---------------------------------------------------------------------------


async def claim(
    session: AsyncSession, worker: str, now: datetime, until: datetime
) -> Row[Any] | None:
    """Lease one queued import, or a running one whose worker's lease ran out (it died), to
    `worker` until `until`; None if there is none. Committed by the caller at once.

    On PostgreSQL the candidate is locked `FOR UPDATE SKIP LOCKED`, so workers pass over
    each other's candidates; the conditional UPDATE makes the lease exclusive everywhere."""
    lease_free = or_(imports.c.claimed_until.is_(None), imports.c.claimed_until < now)
    candidate = (
        select(imports.c.id)
        .where(imports.c.status.in_(_ACTIVE), lease_free)
        .order_by(imports.c.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True)
    import_id = await session.scalar(candidate)
    if import_id is None:
        return None
    return await take(session, import_id, worker, now, until, lease_free)


async def take(
    session: AsyncSession,
    import_id: int,
    worker: str,
    now: datetime,
    until: datetime,
    condition: Any = None,
) -> Row[Any] | None:
    """Lease this import to `worker` if it is still to be worked on (and `condition` holds)."""
    if condition is None:
        condition = or_(
            imports.c.claimed_until.is_(None),
            imports.c.claimed_until < now,
            imports.c.claimed_by == worker,
        )
    result = await session.execute(
        update(imports)
        .where(imports.c.id == import_id, imports.c.status.in_(_ACTIVE), condition)
        .values(
            claimed_by=worker,
            claimed_until=until,
            status=ImportStatus.RUNNING.value,
            started_at=func.coalesce(imports.c.started_at, now),
            # A new claim (not the same worker going on) counts as an attempt.
            attempts=case(
                (imports.c.claimed_by == worker, imports.c.attempts), else_=imports.c.attempts + 1
            ),
            updated_at=now,
        )
        .returning(*imports.c)
    )
    return result.first()


async def content_of(session: AsyncSession, import_id: int) -> bytes | None:
    content: bytes | None = await session.scalar(
        select(files.c.content).where(files.c.import_id == import_id)
    )
    return content


async def renew(
    session: AsyncSession, import_id: int, worker: str, until: datetime
) -> Row[Any] | None:
    """Extend `worker`'s lease and lock the job's row for this transaction (a batch and its
    progress commit together): the job as it stands, or None if the lease was lost."""
    result = await session.execute(
        update(imports)
        .where(
            imports.c.id == import_id,
            imports.c.claimed_by == worker,
            imports.c.status == ImportStatus.RUNNING.value,
        )
        .values(claimed_until=until)
        .returning(*imports.c)
    )
    return result.first()


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str | None
    code: str
    message: str


@dataclass
class Progress:
    """What one batch did."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0


async def record_batch(
    session: AsyncSession,
    import_id: int,
    worker: str,
    progress: Progress,
    errors: Sequence[RowError],
    now: datetime,
) -> bool:
    """Add a batch's counts and errors to the job, while `worker` holds it; False if it does
    not any more (then the caller rolls the batch back)."""
    result = await session.execute(
        update(imports)
        .where(imports.c.id == import_id, imports.c.claimed_by == worker)
        .values(
            rows_done=imports.c.rows_done + progress.rows,
            created=imports.c.created + progress.created,
            updated=imports.c.updated + progress.updated,
            skipped=imports.c.skipped + progress.skipped,
            failed=imports.c.failed + progress.failed,
            updated_at=now,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    if errors:
        await session.execute(
            insert(row_errors),
            [
                {
                    "import_id": import_id,
                    "row": error.row,
                    # What a file says goes back as text: never a NUL (PostgreSQL refuses it).
                    "column": _text(error.column, 200),
                    "code": error.code,
                    "message": _text(error.message, 1000) or "",
                }
                for error in errors
            ],
        )
    return True


async def finish(
    session: AsyncSession,
    import_id: int,
    worker: str | None,
    status: ImportStatus,
    now: datetime,
    error: str | None = None,
) -> bool:
    """Settle the job (while `worker` holds it; None: whoever does) and delete its file."""
    condition = imports.c.claimed_by == worker if worker is not None else imports.c.id == import_id
    result = await session.execute(
        update(imports)
        .where(imports.c.id == import_id, imports.c.status.in_(_ACTIVE), condition)
        .values(
            status=status.value,
            error=error[:1000] if error else None,
            finished_at=now,
            claimed_by=None,
            claimed_until=None,
            updated_at=now,
        )
    )
    await session.execute(delete(files).where(files.c.import_id == import_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def prune_files(session: AsyncSession) -> int:
    """Delete the files of finished imports (normally gone already: `finish` deletes them)."""
    finished = select(imports.c.id).where(imports.c.status.not_in(_ACTIVE))
    result = await session.execute(delete(files).where(files.c.import_id.in_(finished)))
    return int(getattr(result, "rowcount", 0) or 0)


def _text(value: str | None, length: int) -> str | None:
    return value.replace("\x00", "")[:length] if value else None
