"""Alembic environment: async engine, URL from the application's settings."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection
from sqlalchemy.schema import SchemaItem

from alembic import context
from app.core.config import get_settings
from app.db.session import create_engine
from app.models import Base
from app.repositories.custom_fields import is_custom_field_index

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return str(config.attributes.get("database_url") or get_settings().DATABASE_URL)


def _include_object(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # The per-key indexes of custom fields are made and dropped by the service as definitions
    # come and go (`app.repositories.custom_fields`), not by migrations.
    if type_ == "index" and reflected and is_custom_field_index(name):
        return False
    # Objects that exist on one database only (the trigram index) are tagged in the model.
    only_on = getattr(obj, "info", {}).get("only_on")
    return only_on is None or only_on == context.get_context().dialect.name


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(get_settings(), _url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
