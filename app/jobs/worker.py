"""The worker loop: `minicrm worker`, and the same loop inside the API process when
`BACKGROUND_WORKER` says so (by default on SQLite only, so webhooks, imports and the trash's
purge work with `make run`).

Each turn purges the trash when due (at most once per `TRASH_PURGE_INTERVAL_SECONDS` per
process, `TrashPurger`), then serves one webhook endpoint and a slice of one import. Beside
the loops, each process keeps the custom field indexes (`app.jobs.custom_field_indexes`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.jobs.custom_field_indexes import keep_custom_field_indexes
from app.jobs.imports import ImportRunner
from app.jobs.webhooks import WebhookDeliverer, worker_name
from app.services.trash import TrashPurger

logger = logging.getLogger(__name__)


async def run_worker(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    stop: asyncio.Event,
    *,
    name: str | None = None,
    purger: TrashPurger | None = None,
) -> None:
    """Purge the trash when due, deliver webhooks and run imports until `stop` is set: serve
    one endpoint and a slice of one import after another while there is work, else look again
    every `WORKER_POLL_SECONDS`. A failure is logged and the loop goes on (the lease of the
    endpoint or import it was serving runs out, and it is served again).

    Loops of one process share one `purger`, so the process purges once per interval."""
    name = name or worker_name()
    deliverer = WebhookDeliverer(session_factory, settings, name=name)
    importer = ImportRunner(session_factory, settings, name=name)
    purger = purger or TrashPurger(session_factory, settings)
    try:
        while not stop.is_set():
            worked = False
            try:
                await purger.run_if_due()
            except Exception:
                logger.exception("purging the trash failed; trying again at the next interval")
            try:
                worked = await deliverer.run_once()
            except Exception:
                logger.exception("webhook delivery failed; retrying after a pause")
            try:
                worked = await importer.run_once() or worked
            except Exception:
                logger.exception("import failed; retrying after a pause")
                importer.forget()
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.WORKER_POLL_SECONDS)
    finally:
        await deliverer.aclose()


class BackgroundWork:
    """`concurrency` worker loops as tasks of the running process (the API's lifespan), and
    the keeping of custom field indexes (PostgreSQL only)."""

    def __init__(
        self,
        engine: AsyncEngine,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        concurrency: int = 1,
    ) -> None:
        self.stop = asyncio.Event()
        purger = TrashPurger(session_factory, settings)
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(run_worker(session_factory, settings, self.stop, purger=purger))
            for _ in range(concurrency)
        ]
        self.tasks.append(loop.create_task(keep_custom_field_indexes(engine, settings, self.stop)))

    async def aclose(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
