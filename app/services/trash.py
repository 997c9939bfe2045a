"""The trash (contract section 16): deleting a contact, deal or task moves it here for
`TRASH_RETENTION_DAYS`; `GET /trash` lists it, `POST /{contacts|deals|tasks}/{id}/restore`
brings a record back (`ContactService.restore`, `DealService.restore`, `TaskService.restore`),
and the purge deletes it for good once retention has passed.

The rule that hides trashed records from every other read is one function,
`app.repositories.base.live`, applied by `TenantRepository.live_rows`."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.tenancy import TenantContext
from app.db.types import utcnow
from app.models import Contact, Deal
from app.repositories.trash import Purged, TrashRepository, purge_batch
from app.schemas.common import PageParams
from app.schemas.contact import ContactRead
from app.schemas.deal import DealRead
from app.schemas.task import TaskRead
from app.schemas.trash import TrashItem, TrashType
from app.services import events, read_models

logger = logging.getLogger(__name__)

PURGE_BATCH = 500


class TrashService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, retention_days: int) -> None:
        self.ctx = ctx
        self.trash = TrashRepository(session, ctx.organization_id)
        self.retention = timedelta(days=retention_days)

    async def list(self, kind: TrashType | None, page: PageParams) -> tuple[list[TrashItem], int]:
        rows, total = await self.trash.list(kind, page)
        items = []
        for row in rows:
            record = row.record
            deleted_at = record.deleted_at
            assert deleted_at is not None
            obj: ContactRead | DealRead | TaskRead
            if isinstance(record, Contact):
                obj = ContactRead.model_validate(record)
            elif isinstance(record, Deal):
                obj = DealRead.model_validate(record)
            else:
                obj = TaskRead.model_validate(record)
            items.append(
                TrashItem(
                    type=row.type,
                    id=record.id,
                    deleted_at=deleted_at,
                    purge_at=deleted_at + self.retention,
                    object=obj,
                )
            )
        return items, total


async def purge(session: AsyncSession, retention_days: int, now: datetime | None = None) -> Purged:
    """Delete for good what went to the trash more than `retention_days` before `now`, in
    batches, in this transaction. No events (each record had its `*.deleted` when trashed)
    and no read-model change (trashed records are in none)."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    events.purging(session)
    read_models.purging(session)
    purged = Purged()
    while True:
        batch = await purge_batch(session, cutoff, PURGE_BATCH)
        purged += batch
        if max(batch.contacts, batch.deals, batch.tasks) < PURGE_BATCH:
            return purged


class TrashPurger:
    """The purge step of the worker loop: at most once per `TRASH_PURGE_INTERVAL_SECONDS` in
    a process, however many loops share it (one transaction of its own). The first purge comes
    one interval after the process starts, not during its start-up."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self._lock = asyncio.Lock()
        self._last = time.monotonic()

    async def run_if_due(self) -> Purged | None:
        """Purge if the interval has passed since the last purge of this process (None: not
        due, or another loop is purging)."""
        if self._lock.locked() or not self._due():
            return None
        async with self._lock:
            if not self._due():
                return None
            self._last = time.monotonic()
            async with self.session_factory() as session, session.begin():
                purged = await purge(session, self.settings.TRASH_RETENTION_DAYS)
        if purged.total:
            logger.info(
                "purged from the trash: %d contact(s), %d deal(s), %d task(s)",
                purged.contacts,
                purged.deals,
                purged.tasks,
            )
        return purged

    def _due(self) -> bool:
        return time.monotonic() - self._last >= self.settings.TRASH_PURGE_INTERVAL_SECONDS
