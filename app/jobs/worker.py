"""The worker loop: `minicrm worker`, and the same loop inside the API process when
`BACKGROUND_WORKER` says so (by default on SQLite only, so webhooks and imports work with
`make run`). Each turn serves one webhook endpoint and a slice of one import."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.jobs.imports import ImportRunner
from app.jobs.webhooks import WebhookDeliverer, worker_name

logger = logging.getLogger(__name__)


async def run_worker(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    stop: asyncio.Event,
    *,
    name: str | None = None,
) -> None:
    """Deliver webhooks and run imports until `stop` is set: serve one endpoint and a slice
    of one import after another while there is work, else look again every
    `WORKER_POLL_SECONDS`. A failure is logged and the loop goes on (the lease of the
    endpoint or import it was serving runs out, and it is served again)."""
    name = name or worker_name()
    deliverer = WebhookDeliverer(session_factory, settings, name=name)
    importer = ImportRunner(session_factory, settings, name=name)
    try:
        while not stop.is_set():
            worked = False
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
    """`concurrency` worker loops as tasks of the running process (the API's lifespan)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        concurrency: int = 1,
    ) -> None:
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.get_running_loop().create_task(run_worker(session_factory, settings, self.stop))
            for _ in range(concurrency)
        ]

    async def aclose(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
