from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.schemas.common import PageParams

T = TypeVar("T")
S = TypeVar("S", bound=Select[Any])


class RowLock(Enum):
    """Row locks held until commit (PostgreSQL; SQLite already serialises writers with
    BEGIN IMMEDIATE, so there these are no-ops)."""

    SHARE = "share"  # others may read-lock too; a concurrent DELETE/UPDATE waits
    UPDATE = "update"  # exclusive: concurrent writers of this row queue up behind us


def with_lock(query: S, lock: RowLock | None) -> S:
    if lock is None:
        return query
    return query.with_for_update(read=lock is RowLock.SHARE)


class TenantRepository:
    """Base for repositories of tenant data: bound to one organization at construction, so no
    query can be written without it."""

    def __init__(self, session: AsyncSession, organization_id: int) -> None:
        self.session = session
        self.organization_id = organization_id

    async def paginate(self, query: Select[Any], page: PageParams) -> tuple[Sequence[Any], int]:
        total = await self.session.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        )
        rows = await self.session.scalars(query.limit(page.page_size).offset(page.offset))
        return rows.all(), int(total or 0)
