from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Numeric,
    Row,
    Select,
    String,
    func,
    select,
    type_coerce,
)
from sqlalchemy import Enum as EnumType
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.session import plan_for_values
from app.db.types import MONEY_PRECISION, MONEY_SCALE, Money, UTCDateTime
from app.schemas.common import PageParams, SortOrder

T = TypeVar("T")
S = TypeVar("S", bound=Select[Any])


# --- the live-record rule (the trash, contract section 16) ---------------------------------


def live(model: Any) -> ColumnElement[bool]:
    """THE LIVE-RECORD RULE: a contact, deal or task is live while it is not in the trash.

    Every read of those tables goes through `TenantRepository.live_rows` (or, for statements
    built once on the tables, adds this condition itself: `TENANT_AND_DEAL`, analytics), so
    a trashed record is missing everywhere — by id (404), in lists, counts, search, exports,
    analytics — and a new read gets the rule by starting from `live_rows`. Only the trash
    itself (`app.repositories.trash`: listing, restore, purge) reads trashed rows. The hot
    list indexes are partial on the same condition (`app.models._columns.live_index`)."""
    condition: ColumnElement[bool] = model.deleted_at.is_(None)
    return condition


class RowLock(Enum):
    """Row locks held until commit (PostgreSQL; SQLite already serialises writers with
    BEGIN IMMEDIATE, so there these are no-ops)."""

    SHARE = "share"  # others may read-lock too; a concurrent DELETE/UPDATE waits
    # Weaker: only a concurrent DELETE (or a change of a key) waits, not an UPDATE of other
    # columns (a deal write checking its stage does not hold up a stage's rename).
    KEY_SHARE = "key_share"
    UPDATE = "update"  # exclusive: concurrent writers of this row queue up behind us
    # Exclusive for writers, but not against KEY_SHARE holders (a stage's rename, reorder).
    NO_KEY_UPDATE = "no_key_update"


def with_lock(query: S, lock: RowLock | None) -> S:
    if lock is None:
        return query
    read = lock in (RowLock.SHARE, RowLock.KEY_SHARE)
    key_share = lock in (RowLock.KEY_SHARE, RowLock.NO_KEY_UPDATE)
    return query.with_for_update(read=read, key_share=key_share)


def sorted_by(query: S, column: Any, id_column: Any, order: SortOrder) -> S:
    """Order by `column`, then by id in the same direction: a stable order for paging."""
    if order is SortOrder.DESC:
        return query.order_by(column.desc(), id_column.desc())
    return query.order_by(column.asc(), id_column.asc())


class TenantRepository:
    """Base for repositories of tenant data: bound to one organization at construction, so no
    query can be written without it."""

    def __init__(self, session: AsyncSession, organization_id: int) -> None:
        self.session = session
        self.organization_id = organization_id

    def live_rows(self, model: type[T]) -> Select[T]:
        """`SELECT model` of this organization's live rows (see `live`): where every read of
        contacts, deals and tasks starts."""
        entity: Any = model
        return select(model).where(entity.organization_id == self.organization_id, live(entity))

    async def paginate(
        self, query: Select[Any], page: PageParams, *, id_column: Any = None
    ) -> tuple[Sequence[Any], int]:
        """One page of `query` plus the total count.

        With `id_column`, the page is found by ids first (a narrow index scan that skips the
        offset without reading the rows it skips) and only its rows are then fetched: deep
        pages cost little more than the first."""
        total = await self.count(query)
        return await self.page(query, page, id_column=id_column), total

    async def count(self, query: Select[Any]) -> int:
        """How many rows `query` matches (the `total` of a page)."""
        await plan_for_values(self.session)
        total = await self.session.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        )
        return int(total or 0)

    async def page(
        self, query: Select[Any], page: PageParams, *, id_column: Any = None
    ) -> Sequence[Any]:
        """One page of `query`, in its order (see `paginate` for `id_column`)."""
        await plan_for_values(self.session)
        if id_column is None:
            rows = await self.session.scalars(query.limit(page.page_size).offset(page.offset))
            return rows.all()
        page_ids = (
            query.with_only_columns(id_column).limit(page.page_size).offset(page.offset).subquery()
        )
        rows = await self.session.scalars(query.join(page_ids, id_column == page_ids.c.id))
        return rows.all()

    async def id_batch(
        self,
        query: Select[Any],
        id_column: Any,
        fields: Sequence[str],
        after_id: int | None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        """Up to `limit` rows of `query` with an id above `after_id`, in id order, as tuples of
        the table's columns `fields`, each as stored (`as_stored`).

        For exports: each batch is an index range from the last id of the one before (the
        `(organization_id, id)` index), so the millionth row costs what the first does, and
        `query`'s own WHERE clause (the list's filters) is kept as it is. Run on the session's
        connection, not through the session: Core rows, no ORM loading step per row."""
        connection = await self.session.connection()
        table = id_column.table
        columns = [as_stored(table.c[name], connection.dialect.name) for name in fields]
        batch = query.with_only_columns(*columns).order_by(None).order_by(id_column).limit(limit)
        if after_id is not None:
            batch = batch.where(id_column > after_id)
        result = await connection.execute(batch)
        return result.all()


def as_stored(column: Any, dialect: str) -> Any:
    """`column` read without the per-value Python conversions its type would run, where the
    driver's value already says the same (a bulk read, such as an export, pays them a million
    times): an enum as its string value; a `UTCDateTime` as the driver's datetime (asyncpg's
    is aware and in UTC; SQLite's is naive, and UTC); money on PostgreSQL as asyncpg's exact
    `Decimal` (on SQLite it is stored in cents and keeps its conversion)."""
    kind = column.type
    if isinstance(kind, EnumType):
        return type_coerce(column, String()).label(column.key)
    if isinstance(kind, UTCDateTime):
        return type_coerce(column, DateTime(timezone=True)).label(column.key)
    if isinstance(kind, Money) and dialect == "postgresql":
        return type_coerce(column, Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)).label(
            column.key
        )
    return column
