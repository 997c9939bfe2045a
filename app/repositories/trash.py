"""The SQL of the trash: the only reads of trashed rows (every other read keeps to live rows,
`app.repositories.base.live`), and the purge of rows past retention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    CursorResult,
    Select,
    Table,
    delete,
    exists,
    func,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from app.models import Contact, Deal, Task
from app.repositories.base import RowLock, TenantRepository, with_lock
from app.schemas.common import PageParams
from app.schemas.trash import TrashType

_R = TypeVar("_R", Contact, Deal, Task)
_MODELS: dict[TrashType, Any] = {
    TrashType.CONTACT: Contact,
    TrashType.DEAL: Deal,
    TrashType.TASK: Task,
}


def trashed(model: Any) -> Any:
    """In the trash: the opposite of `live`."""
    return model.deleted_at.is_not(None)


def put_in_trash(record: Contact | Deal | Task, at: datetime) -> None:
    """Mark `record` trashed at `at` (written at the next flush). Its `updated_at` is kept (not
    moved by the UPDATE), so the trash shows the record exactly as it was deleted, as its
    `*.deleted` event does. Restoring it is a change like any other and moves it."""
    record.deleted_at = at
    record.updated_at = record.updated_at
    flag_modified(record, "updated_at")  # sent as is, so its onupdate does not replace it


@dataclass(frozen=True, slots=True)
class TrashRow:
    type: TrashType
    record: Contact | Deal | Task


class TrashRepository(TenantRepository):
    def _trashed_rows(self, model: type[_R]) -> Select[_R]:
        entity: Any = model
        return select(model).where(entity.organization_id == self.organization_id, trashed(entity))

    async def contact(self, contact_id: int, *, lock: RowLock | None = None) -> Contact | None:
        query = self._trashed_rows(Contact).where(Contact.id == contact_id)
        return await self.session.scalar(with_lock(query, lock))

    async def deal(self, deal_id: int, *, lock: RowLock | None = None) -> Deal | None:
        query = self._trashed_rows(Deal).where(Deal.id == deal_id)
        return await self.session.scalar(with_lock(query, lock))

    async def task(self, task_id: int, *, lock: RowLock | None = None) -> Task | None:
        query = self._trashed_rows(Task).where(Task.id == task_id)
        return await self.session.scalar(with_lock(query, lock))

    async def any_deal(self, deal_id: int) -> Deal | None:
        """The deal, live or trashed (a trashed task's deal may be either)."""
        return await self.session.scalar(
            select(Deal).where(Deal.organization_id == self.organization_id, Deal.id == deal_id)
        )

    async def tasks_trashed_with(self, deal: Deal) -> Sequence[Task]:
        """The deal's tasks that went to the trash with it: they carry its `deleted_at` to the
        microsecond (a task deleted on its own earlier carries its own, and stays trashed)."""
        rows = await self.session.scalars(
            self._trashed_rows(Task)
            .where(Task.deal_id == deal.id, Task.deleted_at == deal.deleted_at)
            .order_by(Task.id)
        )
        return rows.all()

    async def list(
        self, kind: TrashType | None, page: PageParams
    ) -> tuple[Sequence[TrashRow], int]:
        """One page of the trash, most recently deleted first (then by type and id), and its
        total: the page is chosen over the three tables' trash indexes, then its records are
        read by id."""
        kinds = [kind] if kind is not None else list(TrashType)
        parts = [
            select(
                literal(k.value).label("type"),
                _MODELS[k].id.label("id"),
                _MODELS[k].deleted_at.label("deleted_at"),
            ).where(_MODELS[k].organization_id == self.organization_id, trashed(_MODELS[k]))
            for k in kinds
        ]
        entries = union_all(*parts).subquery()
        total = int(await self.session.scalar(select(func.count()).select_from(entries)) or 0)
        keys = (
            await self.session.execute(
                select(entries.c.type, entries.c.id)
                .order_by(entries.c.deleted_at.desc(), entries.c.type, entries.c.id.desc())
                .limit(page.page_size)
                .offset(page.offset)
            )
        ).all()
        records: dict[tuple[str, int], Contact | Deal | Task] = {}
        for k in kinds:
            ids = [id_ for type_, id_ in keys if type_ == k.value]
            if ids:
                model = _MODELS[k]
                found = await self.session.scalars(
                    self._trashed_rows(model).where(model.id.in_(ids))
                )
                records.update({(k.value, record.id): record for record in found})
        rows = [
            TrashRow(TrashType(type_), records[(type_, id_)])
            for type_, id_ in keys
            if (type_, id_) in records  # restored or purged between the two reads
        ]
        return rows, total

    async def forget_company(self, company_id: int) -> None:
        """Take the contacts and deals in the trash out of a company that is being deleted
        for good: restored, they belong to none. Their `updated_at` is kept (the trash shows
        them as they were deleted, but for the company).

        Run on the session's connection, past the ORM session's guards, which would ask for
        data versions and events: trashed records are in no read model and have no events
        (`app.services.read_models`, `app.services.events`), so neither is owed. The rows stay
        locked until the commit: a restore that comes after waits for it, then brings the
        record back without the company."""
        connection = await self.session.connection()
        for model in (Contact, Deal):
            table = cast(Table, model.__table__)
            await connection.execute(
                update(table)
                .where(
                    table.c.organization_id == self.organization_id,
                    table.c.company_id == company_id,
                    table.c.deleted_at.is_not(None),
                )
                .values(company_id=None, updated_at=table.c.updated_at)
            )


# --- the purge: system work over every organization (the worker, `minicrm prune`) ------------


@dataclass(frozen=True, slots=True)
class Purged:
    contacts: int = 0
    deals: int = 0
    tasks: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(
            self.contacts + other.contacts, self.deals + other.deals, self.tasks + other.tasks
        )

    @property
    def total(self) -> int:
        return self.contacts + self.deals + self.tasks


async def _delete(session: AsyncSession, model: Any, due: Select[Any]) -> int:
    """Delete the rows whose ids `due` selects (read first: a bounded list of ids)."""
    ids = list(await session.scalars(due))
    if not ids:
        return 0
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


async def purge_batch(session: AsyncSession, cutoff: datetime, batch: int) -> Purged:
    """Delete for good up to `batch` rows of each kind that went to the trash before `cutoff`.

    A purged contact takes its deals with it (all in the trash: a contact with a live deal
    cannot be trashed, nor a deal restored while its contact is), and a purged deal its tasks
    and timeline (ON DELETE CASCADE). Deals go before contacts, which their foreign key needs."""
    due_contacts = list(
        await session.scalars(
            select(Contact.id)
            .where(trashed(Contact), Contact.deleted_at < cutoff)
            .order_by(Contact.deleted_at)
            .limit(batch)
        )
    )
    due_deals = (Deal.deleted_at < cutoff) | Deal.contact_id.in_(due_contacts)
    deals = await _delete(
        session, Deal, select(Deal.id).where(trashed(Deal), due_deals).limit(batch)
    )
    tasks = await _delete(
        session,
        Task,
        select(Task.id)
        .where(trashed(Task), Task.deleted_at < cutoff)
        .order_by(Task.deleted_at)
        .limit(batch),
    )
    # A contact whose deals did not all fit in this batch waits for the next one.
    contacts = await _delete(
        session,
        Contact,
        select(Contact.id).where(
            Contact.id.in_(due_contacts),
            ~exists().where(
                Deal.organization_id == Contact.organization_id, Deal.contact_id == Contact.id
            ),
        ),
    )
    return Purged(contacts, deals, tasks)
