"""Running imports: claimed by a worker, applied in batches, resumed after a crash.

**One job, one worker.** A worker leases a queued import (`claimed_by`, `claimed_until`;
PostgreSQL picks it `FOR UPDATE SKIP LOCKED`, so several workers share the queue), reads the
uploaded file from the database, and applies it `IMPORT_BATCH_SIZE` rows at a time.

**Exactly once per row.** Each batch is one transaction: it renews the lease (which also
locks the job's row), writes the batch's contacts or deals and their events, and adds the
batch's counts, errors and `rows_done` to the job. So the rows and the progress that says
they are done commit together or not at all. A worker killed mid-batch loses that batch's
transaction; once its lease runs out (`IMPORT_LEASE_SECONDS`) another worker takes the job
and starts at `rows_done`: no row is written twice, none is skipped.

**Dry run.** A dry-run batch runs the very same code in a transaction that is rolled back
(nothing it wrote stays: no contacts, deals or events); only its counts and errors are then
recorded. (Rows are judged against the database as it is: a dry run cannot know that row 5
of a later batch would have matched a contact that row 1 would have created.)

**Write conflicts.** A batch writes many deals, so it takes their running totals' rows in
its rows' order and can deadlock with a request writing the same rows; PostgreSQL then rolls
one of them back. A batch rolled back so is run again at once (`CONFLICT_RETRIES`).

**Cancel** sets a flag; the worker sees it at the start of the next batch and stops with
`cancelled` (rows done so far stay). A job is worked on in slices of a few batches, so one
loop of the worker also serves webhooks in between. A job that keeps failing (its worker
dies again and again) stops as `failed` after `MAX_ATTEMPTS` claims."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.cache import Cache, NullCache
from app.core.config import Settings
from app.core.errors import ImportFileInvalid
from app.core.permissions import capped
from app.core.tenancy import TenantContext
from app.db.session import discard_after_commit, is_write_conflict, run_after_commit
from app.db.types import utcnow
from app.models import ApiKey
from app.repositories import imports as jobs
from app.repositories.organizations import OrganizationRepository
from app.schemas.imports import ImportKind, ImportStatus, OnConflict
from app.services.import_files import FileFormat, ParsedFile
from app.services.imports import RowImporter, parse_file

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
# A batch PostgreSQL rolled back to let a concurrent writer through (a deadlock on the running
# totals, a serialization failure) kept nothing: it runs again at once, up to this many times,
# before it fails as any error does (the job is then claimed again after its lease).
CONFLICT_RETRIES = 3
# How long one `run_once` works on its job before it lets its loop do other work.
SLICE_SECONDS = 2.0


class ImportRunner:
    """Works on one import at a time (`run_once`); run as many as wanted, in any processes."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        name: str,
        cache: Cache | None = None,
        clock: Callable[[], datetime] = utcnow,
        slice_seconds: float = SLICE_SECONDS,
    ) -> None:
        self.session_factory = session_factory
        self.slice_seconds = slice_seconds
        self.settings = settings
        self.name = name
        self.cache = cache or NullCache()
        self.clock = clock
        self._job_id: int | None = None
        self._parsed: tuple[int, ParsedFile] | None = None

    def forget(self) -> None:
        """Drop the job in hand after a failure: its lease runs out and it is claimed again
        (by any worker), which counts as another attempt."""
        self._job_id = None
        self._parsed = None

    def _lease_end(self) -> datetime:
        return self.clock() + timedelta(seconds=self.settings.IMPORT_LEASE_SECONDS)

    async def run_once(self, import_id: int | None = None) -> bool:
        """Work on the job in hand, or claim one (`import_id`: only that one), for a slice;
        whether there was one."""
        async with self.session_factory() as session:
            async with session.begin():
                wanted = import_id if import_id is not None else self._job_id
                if wanted is not None:
                    job = await jobs.take(
                        session, wanted, self.name, self.clock(), self._lease_end()
                    )
                else:
                    job = None
                if job is None and import_id is None:
                    job = await jobs.claim(session, self.name, self.clock(), self._lease_end())
            if job is None:
                self._job_id = None
                return False
            self._job_id = job.id
            if job.attempts > MAX_ATTEMPTS:
                await self._fail(session, job.id, "The import kept failing; it was stopped.")
                self._job_id = None
                return True
            finished = await self._work(session, job)
            if finished:
                self._job_id = None
                self._parsed = None
            return True

    async def _work(self, session: AsyncSession, job: Row[Any]) -> bool:
        """A slice of batches of `job`; whether the job is finished (or no longer ours)."""
        ctx = await self._context(session, job)
        if ctx is None:
            await self._fail(
                session,
                job.id,
                "The user (or API key) who started the import may no longer import here.",
            )
            return True
        parsed = await self._file(session, job)
        if parsed is None:
            return True
        started = time.monotonic()
        while True:  # at least one batch per slice
            if job.dry_run:
                done = await self._dry_batch(session, job, ctx, parsed)
            else:
                done = await self._batch_again_on_conflict(session, job, ctx, parsed)
            if done:
                return True
            if time.monotonic() - started >= self.slice_seconds:
                return False

    async def _start_batch(self, session: AsyncSession, job: Row[Any], parsed: ParsedFile) -> Any:
        """In the batch's transaction: renew the lease and settle a cancelled or completed job.
        The batch's records, or None when there is nothing more to do."""
        current = await jobs.renew(session, job.id, self.name, self._lease_end())
        if current is None:
            return None  # lost the lease
        if current.cancel_requested:
            await jobs.finish(session, job.id, self.name, ImportStatus.CANCELLED, self.clock())
            return None
        start = current.rows_done
        records = parsed.records[start : start + self.settings.IMPORT_BATCH_SIZE]
        if not records:
            await jobs.finish(session, job.id, self.name, ImportStatus.SUCCEEDED, self.clock())
            return None
        return records

    async def _batch_again_on_conflict(
        self, session: AsyncSession, job: Row[Any], ctx: TenantContext, parsed: ParsedFile
    ) -> bool:
        conflicts = 0
        while True:
            try:
                return await self._batch(session, job, ctx, parsed)
            except Exception as exc:
                conflicts += 1
                if not is_write_conflict(exc) or conflicts > CONFLICT_RETRIES:
                    raise
                discard_after_commit(session)
                logger.info("import %s: a batch met a write conflict; running it again", job.id)

    async def _batch(
        self, session: AsyncSession, job: Row[Any], ctx: TenantContext, parsed: ParsedFile
    ) -> bool:
        """One batch, its rows and its progress in one transaction; whether the job is done."""
        async with session.begin():
            records = await self._start_batch(session, job, parsed)
            if records is None:
                return True
            importer = RowImporter(
                session, ctx, self.cache, ImportKind(job.kind), OnConflict(job.on_conflict)
            )
            result = await importer.apply(records)
            if not await jobs.record_batch(
                session, job.id, self.name, result.progress, result.errors, self.clock()
            ):
                await session.rollback()
                return True
        await run_after_commit(session)
        return False

    async def _dry_batch(
        self, session: AsyncSession, job: Row[Any], ctx: TenantContext, parsed: ParsedFile
    ) -> bool:
        """One batch applied in a transaction that is rolled back, then its counts recorded
        (three transactions, none waiting on another: SQLite has one writer at a time)."""
        async with session.begin():
            records = await self._start_batch(session, job, parsed)
        if records is None:
            return True
        async with self.session_factory() as scratch:
            await scratch.begin()
            try:
                importer = RowImporter(
                    scratch, ctx, NullCache(), ImportKind(job.kind), OnConflict(job.on_conflict)
                )
                result = await importer.apply(records)
            finally:
                await scratch.rollback()
        async with session.begin():
            return not await jobs.record_batch(
                session, job.id, self.name, result.progress, result.errors, self.clock()
            )

    async def _context(self, session: AsyncSession, job: Row[Any]) -> TenantContext | None:
        """The importer as the rows are written: the creator with their role now (or their
        API key's, never above theirs, while the key stands); None if they may no longer."""
        async with session.begin():
            role = await OrganizationRepository(session).get_role(
                job.organization_id, job.creator_id
            )
            if role is None:
                return None
            if job.api_key_id is not None:
                key = await session.scalar(select(ApiKey).where(ApiKey.id == job.api_key_id))
                if (
                    key is None
                    or key.revoked_at is not None
                    or (key.expires_at is not None and key.expires_at <= self.clock())
                ):
                    return None
                role = capped(key.role, role)
        return TenantContext(
            user_id=job.creator_id,
            organization_id=job.organization_id,
            role=role,
            api_key_id=job.api_key_id,
        )

    async def _file(self, session: AsyncSession, job: Row[Any]) -> ParsedFile | None:
        if self._parsed is not None and self._parsed[0] == job.id:
            return self._parsed[1]
        async with session.begin():
            content = await jobs.content_of(session, job.id)
        if content is None:
            await self._fail(session, job.id, "The uploaded file is gone.")
            return None
        try:
            parsed = await anyio.to_thread.run_sync(
                parse_file, content, FileFormat(job.file_format), ImportKind(job.kind), job.mapping
            )
        except ImportFileInvalid as exc:
            await self._fail(session, job.id, exc.detail)
            return None
        self._parsed = (job.id, parsed)
        return parsed

    async def _fail(self, session: AsyncSession, import_id: int, reason: str) -> None:
        async with session.begin():
            await jobs.finish(
                session, import_id, self.name, ImportStatus.FAILED, self.clock(), reason
            )
        logger.warning("import %s failed: %s", import_id, reason)
