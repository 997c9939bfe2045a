from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import DealInTrash, DealNotFound, TaskNotFound
from app.core.tenancy import TenantContext
from app.core.versioning import ExpectedVersion, ensure_version
from app.db.types import utcnow
from app.models import ActivityType, Task
from app.repositories.activities import ActivityRepository
from app.repositories.base import RowLock
from app.repositories.cursor import Keyset
from app.repositories.deals import DealRepository
from app.repositories.tasks import TaskFilters, TaskRepository
from app.repositories.trash import TrashRepository
from app.schemas.common import PageParams
from app.schemas.event import EventType
from app.schemas.task import TaskCreate, TaskRead, TaskUpdate
from app.services import events
from app.services.policies import ensure_can_modify, ensure_due_date_not_past


class TaskService:
    def __init__(self, session: AsyncSession, ctx: TenantContext) -> None:
        self.session = session
        self.ctx = ctx
        self.tasks = TaskRepository(session, ctx.organization_id)
        self.deals = DealRepository(session, ctx.organization_id)
        self.activities = ActivityRepository(session, ctx.organization_id)
        self.trash = TrashRepository(session, ctx.organization_id)

    async def list(self, filters: TaskFilters, page: PageParams) -> tuple[Sequence[Task], int]:
        return await self.tasks.list(filters, page)

    async def scroll(
        self, filters: TaskFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Task], Keyset | None]:
        """Cursor mode: an index range after `after`, with no total."""
        return await self.tasks.scroll(filters, after, limit)

    async def get(self, task_id: int) -> Task:
        found = await self.tasks.get_with_deal_owner(task_id)
        if found is None:
            raise TaskNotFound()
        return found[0]

    async def create(self, data: TaskCreate) -> Task:
        """Also appends `task_created` to the deal's timeline, in the same transaction."""
        deal = await self.deals.get(data.deal_id, lock=RowLock.SHARE)
        if deal is None:
            raise DealNotFound()
        ensure_can_modify(self.ctx, deal.owner_id, "deals' tasks")
        ensure_due_date_not_past(data.due_date)
        task = Task(
            deal_id=deal.id, title=data.title, description=data.description, due_date=data.due_date
        )
        try:
            await self.tasks.add(task)
        except IntegrityError as exc:  # the deal was deleted under us
            raise DealNotFound() from exc
        await self.activities.add(
            deal.id,
            ActivityType.TASK_CREATED,
            {"task_id": task.id, "task_title": task.title},
            self.ctx.user_id,
            self.ctx.api_key_id,
        )
        events.record(self.session, self.ctx, EventType.TASK_CREATED, _read(task))
        return task

    async def update(
        self, task_id: int, data: TaskUpdate, *, expected: ExpectedVersion | None = None
    ) -> Task:
        task = await self._modifiable(task_id, expected)
        changes = data.changes()
        if "due_date" in changes and changes["due_date"] != task.due_date:
            ensure_due_date_not_past(changes["due_date"])
        before = _read(task)
        for field, value in changes.items():
            setattr(task, field, value)
        await self.session.flush()
        events.record_update(self.session, self.ctx, EventType.TASK_UPDATED, before, _read(task))
        return task

    async def delete(self, task_id: int, *, expected: ExpectedVersion | None = None) -> None:
        """Moves the task to the trash (`restore` brings it back)."""
        task = await self._modifiable(task_id, expected)
        gone = _read(task)
        await self.tasks.trash(task, utcnow())
        events.record(self.session, self.ctx, EventType.TASK_DELETED, gone)

    async def restore(self, task_id: int) -> Task:
        """Bring a task back from the trash (404 if it is not there); who may delete it may
        restore it. Its deal must be live: 409 `DEAL_IN_TRASH` otherwise (restoring the deal
        brings back the tasks that went with it)."""
        task = await self.trash.task(task_id, lock=RowLock.UPDATE)
        if task is None:
            raise TaskNotFound()
        # A share lock, as on create: the deal cannot go to the trash until we commit.
        deal = await self.deals.get(task.deal_id, lock=RowLock.SHARE)
        if deal is None:
            trashed_deal = await self.trash.any_deal(task.deal_id)
            if trashed_deal is not None:  # always: a task's deal is live or in the trash
                ensure_can_modify(self.ctx, trashed_deal.owner_id, "deals' tasks")
            raise DealInTrash()
        ensure_can_modify(self.ctx, deal.owner_id, "deals' tasks")
        task.deleted_at = None
        await self.session.flush()
        events.record(self.session, self.ctx, EventType.TASK_RESTORED, _read(task))
        return task

    async def _modifiable(self, task_id: int, expected: ExpectedVersion | None) -> Task:
        """The task, locked for this write (so `expected` is checked against the version the
        write starts from, and concurrent writers of it queue up)."""
        found = await self.tasks.get_with_deal_owner(task_id, lock=RowLock.UPDATE)
        if found is None:
            raise TaskNotFound()
        task, deal_owner_id = found
        ensure_can_modify(self.ctx, deal_owner_id, "deals' tasks")
        ensure_version(expected, task.id, task.updated_at)
        return task


def _read(task: Task) -> TaskRead:
    return TaskRead.model_validate(task)
