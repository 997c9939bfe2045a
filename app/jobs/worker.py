"""The worker loop: `minicrm worker`, and the same loop inside the API process when
`BACKGROUND_WORKER` says so (by default on SQLite only, so webhooks work with `make run`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.jobs.webhooks import WebhookDeliverer

logger = logging.getLogger(__name__)


async def run_worker(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    stop: asyncio.Event,
    *,
    name: str | None = None,
) -> None:
    """Deliver webhooks until `stop` is set: serve one endpoint after another while there is
    work, else look again every `WORKER_POLL_SECONDS`. A failure is logged and the loop goes
    on (the lease of the endpoint it was serving runs out, and it is served again)."""
    deliverer = WebhookDeliverer(session_factory, settings, name=name)
    try:
        while not stop.is_set():
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
        self.tasks = [
            asyncio.get_running_loop().create_task(run_worker(session_factory, settings, self.stop))
            for _ in range(concurrency)
        ]

    async def aclose(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
