from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, Select, select

from app.models import Deal, Task
from app.repositories.base import RowLock, TenantRepository, live
from app.repositories.cursor import KeyOrder, Keyset, scroll
from app.repositories.trash import put_in_trash
from app.schemas.common import PageParams

# Due date ascending, tasks without one last, then id.
_ORDER = KeyOrder(Task.due_date, Task.id, nulls_last=True)


@dataclass(frozen=True, slots=True)
class TaskFilters:
    deal_id: int | None = None
    only_open: bool = False
    due_before: date | None = None
    due_after: date | None = None


class TaskRepository(TenantRepository):
    async def get_with_deal_owner(
        self, task_id: int, *, lock: RowLock | None = None
    ) -> tuple[Task, int] | None:
        """The task and the owner of its deal (members may only touch tasks of their deals).
        `lock` locks the task's row only, not its deal's."""
        query = (
            select(Task, Deal.owner_id)
            .join(Deal, (Deal.organization_id == Task.organization_id) & (Deal.id == Task.deal_id))
            .where(Task.organization_id == self.organization_id, Task.id == task_id, live(Task))
        )
        if lock is not None:
            query = query.with_for_update(of=Task, read=lock is RowLock.SHARE)
        row = await self.session.execute(query)
        result = row.one_or_none()
        return None if result is None else (result[0], result[1])

    async def list(self, filters: TaskFilters, page: PageParams) -> tuple[Sequence[Task], int]:
        return await self.paginate(_ORDER.apply(self._matching(filters)), page)

    async def scroll(
        self, filters: TaskFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Task], Keyset | None]:
        """Up to `limit` matching tasks after `after`, and where the next page starts."""
        return await scroll(self.session, self._matching(filters), _ORDER, after, limit)

    async def export_batch(
        self, filters: TaskFilters, fields: Sequence[str], after_id: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        """An export's next batch: up to `limit` matching tasks after `after_id`, in id
        order, as rows of the columns `fields`. The filters (and their sort, ignored) are the
        list's own, so an export answers what the list does."""
        return await self.id_batch(self._matching(filters), Task.id, fields, after_id, limit)

    def _matching(self, filters: TaskFilters) -> Select[Any]:
        query = self.live_rows(Task)
        if filters.deal_id is not None:
            query = query.where(Task.deal_id == filters.deal_id)
        if filters.only_open:
            query = query.where(Task.is_done.is_(False))
        if filters.due_before is not None:
            query = query.where(Task.due_date <= filters.due_before)
        if filters.due_after is not None:
            query = query.where(Task.due_date >= filters.due_after)
        return query

    async def of_deal(self, deal_id: int) -> Sequence[Task]:
        """The deal's live tasks."""
        rows = await self.session.scalars(
            self.live_rows(Task).where(Task.deal_id == deal_id).order_by(Task.id)
        )
        return rows.all()

    async def add(self, task: Task) -> Task:
        task.organization_id = self.organization_id
        self.session.add(task)
        await self.session.flush()
        return task

    async def trash(self, task: Task, at: datetime) -> None:
        put_in_trash(task, at)
        await self.session.flush()
