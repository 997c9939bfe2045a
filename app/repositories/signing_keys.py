from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.types import utcnow
from app.models import SigningKey

_keys = SigningKey.__table__
_INSERT: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


async def stored_secret(connection: AsyncConnection, name: str, candidate: str) -> str:
    """The secret stored under `name`, storing `candidate` first if there is none.

    Insert-if-absent, then read: of processes starting at the same time, one insert wins and
    every one of them reads the winner's secret (on PostgreSQL a losing insert waits for the
    winner's commit; the read that follows, in a new snapshot, sees it)."""
    insert = _INSERT[connection.dialect.name](_keys).values(
        name=name, secret=candidate, created_at=utcnow()
    )
    await connection.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
    secret: str = (
        await connection.execute(select(_keys.c.secret).where(_keys.c.name == name))
    ).scalar_one()
    return secret
