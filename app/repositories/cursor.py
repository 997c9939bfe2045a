"""Keyset (seek) pagination, once for every list: a page starts just after a known row.

A page is read as an index range that begins at the last row the client saw (its sort value
and id), never by skipping rows with OFFSET: page 10,000 costs what page 1 costs, and rows
inserted or deleted before the position neither shift the next page (nothing repeated or
skipped) nor make it slower. Each list names its order as a `KeyOrder`; the composite indexes
`(organization_id, [filter,] column, id)` in `app.models` serve these ranges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.session import plan_for_values

S = TypeVar("S", bound=Select[Any])


@dataclass(frozen=True, slots=True)
class Keyset:
    """A row's place in its list's order: the sort column's value and the row's id."""

    value: Any
    id: int


@dataclass(frozen=True, slots=True)
class KeyOrder:
    """A list's order: `column` (ascending or descending), then `id` in the same direction.
    `nulls_last` (ascending only): rows without a value come after all others, by id."""

    column: Any
    id_column: Any
    descending: bool = False
    nulls_last: bool = False

    def __post_init__(self) -> None:
        if self.nulls_last and self.descending:
            raise ValueError("nulls_last is supported for ascending orders only")

    def apply(self, query: S) -> S:
        query = query.order_by(None)
        if self.descending:
            return query.order_by(self.column.desc(), self.id_column.desc())
        column = self.column.asc().nulls_last() if self.nulls_last else self.column.asc()
        return query.order_by(column, self.id_column.asc())

    def key_of(self, row: Any) -> Keyset:
        return Keyset(getattr(row, self.column.key), getattr(row, self.id_column.key))

    def from_(self, start: Keyset, *, inclusive: bool = False) -> ColumnElement[bool]:
        """The rows at `start` (if `inclusive`) and after it in this order, for a non-null
        `start.value`; written as `column >= v AND (...)` so the index range starts at `v`."""
        column, id_column, value = self.column, self.id_column, start.value
        if self.descending:
            tie = id_column <= start.id if inclusive else id_column < start.id
            return and_(column <= value, or_(column < value, tie))
        tie = id_column >= start.id if inclusive else id_column > start.id
        return and_(column >= value, or_(column > value, tie))


async def scroll(
    session: AsyncSession, query: Select[Any], order: KeyOrder, after: Keyset | None, limit: int
) -> tuple[Sequence[Any], Keyset | None]:
    """Up to `limit` rows of `query` after `after` (from the start without it) in `order`,
    and the position to continue from (None: this was the last page).

    One row more than asked is read to know whether another page follows. With `nulls_last`,
    the rows with a value and those without are two index ranges, read one after the other."""
    await plan_for_values(session)
    wanted = limit + 1
    rows: list[Any] = []
    if after is None or after.value is not None:
        valued = query if not order.nulls_last else query.where(order.column.is_not(None))
        if after is not None:
            valued = valued.where(order.from_(after))
        rows.extend((await session.scalars(order.apply(valued).limit(wanted))).all())
    if order.nulls_last and len(rows) < wanted:
        empty = query.where(order.column.is_(None))
        if after is not None and after.value is None:
            empty = empty.where(order.id_column > after.id)
        empty = empty.order_by(None).order_by(order.id_column.asc())
        rows.extend((await session.scalars(empty.limit(wanted - len(rows)))).all())
    if len(rows) > limit:
        page = rows[:limit]
        return page, order.key_of(page[-1])
    return rows, None
