"""The per-key indexes of custom fields (PostgreSQL), kept in step with the definitions by the
worker rather than by the request that creates or deletes a definition.

An index on a big table made in a request's transaction would hold every write to that table,
for every organization, while it builds; a `DROP INDEX` there would wait for the table's
running statements (an export, say) while every new statement on the table queued behind it.
So the request only writes the definition, and every worker process, once per
`CUSTOM_FIELD_INDEX_INTERVAL_SECONDS` (`keep_custom_field_indexes`), compares the keys
defined with the indexes present: it makes a missing index with `CREATE INDEX CONCURRENTLY`
(writes go on), drops one no organization uses any more with `DROP INDEX CONCURRENTLY`, and
rebuilds one an interrupted build left invalid. Until its index is there, a filter on a new
key is answered all the same, by a slower plan. Several workers take turns through an
advisory lock. SQLite has no such indexes (`app.repositories.custom_fields`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.config import Settings
from app.repositories.custom_fields import (
    drop_index_ddl,
    index_ddl,
    present_indexes,
    wanted_indexes,
)

logger = logging.getLogger(__name__)

# pg_try_advisory_lock key: one worker at a time reconciles the indexes.
_LOCK_KEY = 0x63665F69  # "cf_i"


async def reconcile(connection: AsyncConnection, limit: int) -> list[str]:
    """One pass over the per-key indexes on an AUTOCOMMIT `connection`, keeping at most
    `limit` of them: what it did, e.g. `["created ix_deals_cf_source"]`. Nothing when another
    worker holds the turn."""
    if not await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": _LOCK_KEY}):
        return []
    done: list[str] = []
    try:
        wanted = await wanted_indexes(connection, limit)
        present = await present_indexes(connection)
        for name, valid in present.items():
            if name not in wanted or not valid:
                await connection.execute(text(drop_index_ddl(name)))
                done.append(f"dropped {name}" + ("" if valid else " (invalid)"))
        for name, (entity, key) in wanted.items():
            if not present.get(name, False):
                await connection.execute(text(index_ddl(entity, key, concurrently=True)))
                done.append(f"created {name}")
    finally:
        await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
    return done


async def keep_custom_field_indexes(
    engine: AsyncEngine, settings: Settings, stop: asyncio.Event
) -> None:
    """A pass every `CUSTOM_FIELD_INDEX_INTERVAL_SECONDS` until `stop` is set (PostgreSQL only),
    in a task of its own beside the worker loops, so a long build never stalls webhook
    delivery or imports. Stopped mid-build, it leaves an invalid index, which the next pass
    (of this worker or another) drops and builds again."""
    if engine.dialect.name != "postgresql":
        return
    while not stop.is_set():
        try:
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                limit = settings.CUSTOM_FIELD_INDEXES_MAX
                for step in await reconcile(autocommit, limit):
                    logger.info("custom field index: %s", step)
        except Exception:
            logger.exception("keeping the custom field indexes failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.CUSTOM_FIELD_INDEX_INTERVAL_SECONDS)
