"""The worker loop: `minicrm worker`, and the same loop inside the API process when
`BACKGROUND_WORKER` says so (by default on SQLite only, so webhooks work with `make run`).

Each pass purges the trash when due (at most once per `TRASH_PURGE_INTERVAL_SECONDS` per
process, `TrashPurger`), then delivers webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.jobs.webhooks import WebhookDeliverer
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
    """Deliver webhooks until `stop` is set: serve one endpoint after another while there is
    work, else look again every `WORKER_POLL_SECONDS`. A failure is logged and the loop goes
    on (the lease of the endpoint it was serving runs out, and it is served again).

    Loops of one process share one `purger`, so the process purges once per interval."""
    deliverer = WebhookDeliverer(session_factory, settings, name=name)
    purger = purger or TrashPurger(session_factory, settings)
    try:
        while not stop.is_set():
            try:
                await purger.run_if_due()
            except Exception:
                logger.exception("purging the trash failed; trying again at the next interval")
            try:
                worked = await deliverer.run_once()
            except Exception:
                logger.exception("webhook delivery failed; retrying after a pause")
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.WORKER_POLL_SECONDS)
    finally:
        await deliverer.aclose()


class BackgroundWork:
    """`concurrency` worker loops as tasks of the running process (the API's lifespan)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        concurrency: int = 1,
    ) -> None:
        self.stop = asyncio.Event()
        purger = TrashPurger(session_factory, settings)
        self.tasks = [
            asyncio.get_running_loop().create_task(
                run_worker(session_factory, settings, self.stop, purger=purger)
            )
            for _ in range(concurrency)
        ]

    async def aclose(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
