"""Deals: the pipeline rules and the automatic timeline. What a deal write means for cached
lists and analytics is `app.services.read_models`'s business.

**Pipelines and stages.** A deal is in one pipeline of its organization (the default one when
none is named) and at one of that pipeline's stages (a new deal at its first). A stage key that
none of the organization's pipelines has is refused as a value outside an enum always was (422
`VALIDATION_ERROR`); a key of another pipeline is 400 `STAGE_NOT_IN_PIPELINE`. "Backwards" is
a lower rank (position), compared across pipelines too when a deal moves to another one. The
pipeline and stage a write puts a deal on are locked (`KEY SHARE`) until it commits, so a
concurrent deletion of either waits for it (and then sees its deal), and the database's
foreign keys refuse a deal on a stage that is not its pipeline's, whatever writes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.cache import Cache
from app.core.errors import (
    CompanyReferenceInvalid,
    ContactInTrash,
    ContactReferenceInvalid,
    CustomFieldOrderNotScrollable,
    DealNotFound,
    DealWonRequiresAmount,
    PipelineReferenceInvalid,
    StageNotInPipeline,
    UnknownStage,
)
from app.core.tenancy import AnyCaller, TenantContext
from app.core.text import fold
from app.core.versioning import ExpectedVersion, ensure_version
from app.db.types import utcnow
from app.models import ActivityType, CustomFieldEntity, Deal, DealStatus
from app.repositories.activities import ActivityRepository
from app.repositories.base import RowLock
from app.repositories.companies import CompanyRepository
from app.repositories.contacts import ContactRepository
from app.repositories.cursor import Keyset
from app.repositories.deals import TENANT_AND_DEAL, DealFilters, DealRepository
from app.repositories.pipelines import PipelineRepository, StageRef
from app.repositories.tasks import TaskRepository
from app.repositories.trash import TrashRepository, put_in_trash
from app.schemas.common import PageParams
from app.schemas.deal import DealCreate, DealRead, DealUpdate
from app.schemas.event import EventType
from app.schemas.task import TaskRead
from app.services import custom_fields, events
from app.services.contacts import ensure_owner_assignable
from app.services.policies import ensure_can_modify, ensure_can_move_stage
from app.services.read_models import DealFigures, ReadModels
from app.services.tenancy import resolve_tenant


class DealService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, cache: Cache) -> None:
        self.session = session
        self.ctx = ctx
        self.deals = DealRepository(session, ctx.organization_id)
        self.contacts = ContactRepository(session, ctx.organization_id)
        self.companies = CompanyRepository(session, ctx.organization_id)
        self.activities = ActivityRepository(session, ctx.organization_id)
        self.tasks = TaskRepository(session, ctx.organization_id)
        self.trash = TrashRepository(session, ctx.organization_id)
        self.pipelines = PipelineRepository(session, ctx.organization_id)
        self.read_models = ReadModels(session, ctx.organization_id, cache)

    @staticmethod
    async def read_as_member(
        read_engine: AsyncEngine, caller: AnyCaller, organization_id: int, deal_id: int
    ) -> tuple[TenantContext, Row[Any] | None]:
        """The caller's context and one deal (None: not found), for `GET /deals/{id}`, the
        busiest request: the tenant is resolved (401, 403) by the statement that reads the
        deal, a round trip less than resolving it first. It runs on a pooled connection of
        `read_engine` without an ORM session, whose setup and teardown cost more than the
        statement for one row."""
        async with read_engine.connect() as connection:
            ctx, row = await resolve_tenant(
                connection, caller, organization_id, TENANT_AND_DEAL, deal_id=deal_id
            )
        return ctx, (row if row.id is not None else None)

    async def list(self, filters: DealFilters, page: PageParams) -> tuple[Sequence[Deal], int]:
        """A page and the exact total, cheap at a million deals: the total is counted once
        per filter set, and a page is read from where it is known to begin (both remembered
        under the deals' data version, see `app.services.read_models`)."""
        await self.check_filters(filters)
        version = await self.read_models.deals_version()  # first: what follows is as fresh
        filters = await custom_fields.resolved(
            self.session, self.ctx.organization_id, CustomFieldEntity.DEAL, filters
        )

        async def count() -> int:
            return await self.deals.count_matching(filters)

        total = await self.read_models.deal_total(filters, version, count)
        if filters.custom_order is not None:  # no page starts: an OFFSET scan
            return await self.deals.list(filters, page), total
        start = await self.read_models.deal_page_start(filters, page, version)
        deals = await self.deals.list(filters, page, start)
        await self.read_models.remember_deal_page(filters, page, version, deals, start)
        return deals, total

    async def scroll(
        self, filters: DealFilters, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Deal], Keyset | None]:
        """Cursor mode: an index range after `after`, with no total and no cached page
        starts (the position is the page start). Not sorted by a custom field."""
        if filters.custom_order is not None:
            raise CustomFieldOrderNotScrollable()
        await self.check_filters(filters)
        filters = await custom_fields.resolved(
            self.session, self.ctx.organization_id, CustomFieldEntity.DEAL, filters
        )
        return await self.deals.scroll(filters, after, limit)

    async def check_filters(self, filters: DealFilters) -> None:
        await check_deal_filters(self.session, self.ctx.organization_id, filters)

    async def get(self, deal_id: int, *, lock: RowLock | None = None) -> Deal:
        deal = await self.deals.get(deal_id, lock=lock)
        if deal is None:
            raise DealNotFound()
        return deal

    async def create(
        self,
        data: DealCreate,
        *,
        status: DealStatus | None = None,
        stage: str | None = None,
        owner_id: int | None = None,
    ) -> Deal:
        """`POST /deals`: in `data.pipeline_id` (the default pipeline when None), at its first
        stage. An import may also give the status, stage and owner a PATCH could set, under
        the same rules, checked against the new deal (a new deal's stage is the first, so any
        stage of its pipeline is forward)."""
        place = await self._stage(data.pipeline_id, stage)
        await self._ensure_contact(data.contact_id)
        if data.company_id is not None:
            await self._ensure_company(data.company_id)
        owner = self.ctx.user_id if owner_id is None else owner_id
        await ensure_owner_assignable(self.session, self.ctx, self.ctx.user_id, owner)
        status = status or DealStatus.NEW
        if status is DealStatus.WON and data.amount <= 0:
            raise DealWonRequiresAmount()
        values = await custom_fields.values_for(
            self.session, self.ctx.organization_id, CustomFieldEntity.DEAL, data.custom_fields
        )
        deal = Deal(
            contact_id=data.contact_id,
            company_id=data.company_id,
            owner_id=owner,
            title=data.title,
            search_text=fold(data.title),
            amount=data.amount,
            currency=data.currency,
            status=status,
            pipeline_id=place.pipeline_id,
            stage=place.key,
            custom_fields=values,
        )
        try:
            await self.deals.add(deal)
        except IntegrityError as exc:  # the contact was deleted under us
            raise ContactReferenceInvalid() from exc
        await self.read_models.deal_written(before=None, after=deal)
        events.record(self.session, self.ctx, EventType.DEAL_CREATED, _read(deal))
        return deal

    async def update(
        self, deal_id: int, data: DealUpdate, *, expected: ExpectedVersion | None = None
    ) -> Deal:
        """Every rule is checked against the values the deal will have after the update.
        Fields sent with the value they have are no change: a PATCH that changes nothing
        writes nothing (no `updated_at`, no timeline entry, no cache invalidation).

        The deal row is locked first, so two concurrent PATCHes of one deal run one after the
        other and each sees the other's result: no update and no activity is lost. With
        `expected`, the second of two writers that read the same version is refused (412)."""
        definitions = await custom_fields.lock_definitions_first(
            self.session, self.ctx.organization_id, CustomFieldEntity.DEAL, data
        )
        deal = await self.get(deal_id, lock=RowLock.UPDATE)
        ensure_can_modify(self.ctx, deal.owner_id, "deals")
        ensure_version(expected, deal.id, deal.updated_at)
        sent = data.changes()
        custom = sent.pop("custom_fields", None)
        changes = {field: value for field, value in sent.items() if value != getattr(deal, field)}
        values = custom_fields.changed_values(definitions, custom, deal.custom_fields)
        if values is not None:
            changes["custom_fields"] = values
        if "pipeline_id" in changes or "stage" in changes:
            # Another pipeline: to the stage sent (even one of the same key), else its first.
            place = await self._stage(
                changes.get("pipeline_id", deal.pipeline_id), sent.get("stage")
            )
            current = await self.pipelines.rank(deal.pipeline_id, deal.stage)
            ensure_can_move_stage(self.ctx, _Rank(current or 0), place)
            changes.pop("pipeline_id", None)
            changes.pop("stage", None)
            if place.pipeline_id != deal.pipeline_id:
                changes["pipeline_id"] = place.pipeline_id
            if place.key != deal.stage:
                changes["stage"] = place.key
        new_status = changes.get("status", deal.status)
        if "owner_id" in changes:
            await ensure_owner_assignable(
                self.session, self.ctx, deal.owner_id, changes["owner_id"]
            )
        if changes.get("contact_id", deal.contact_id) != deal.contact_id:
            await self._ensure_contact(changes["contact_id"])
        if changes.get("company_id") is not None:
            await self._ensure_company(changes["company_id"])
        if new_status is DealStatus.WON and changes.get("amount", deal.amount) <= 0:
            raise DealWonRequiresAmount()

        old_status, old_stage, old_pipeline = deal.status, deal.stage, deal.pipeline_id
        before = DealFigures.of(deal)
        read_before = _read(deal) if changes else None
        for field, value in changes.items():
            setattr(deal, field, value)
        if "title" in changes:
            deal.search_text = fold(deal.title)
        if new_status != old_status:
            await self.activities.add(
                deal.id,
                ActivityType.STATUS_CHANGED,
                {"old_status": old_status.value, "new_status": new_status.value},
                self.ctx.user_id,
                self.ctx.api_key_id,
            )
        if deal.stage != old_stage or deal.pipeline_id != old_pipeline:
            moved: dict[str, Any] = {"old_stage": old_stage, "new_stage": deal.stage}
            if deal.pipeline_id != old_pipeline:
                moved |= {"old_pipeline_id": old_pipeline, "new_pipeline_id": deal.pipeline_id}
            await self.activities.add(
                deal.id,
                ActivityType.STAGE_CHANGED,
                moved,
                self.ctx.user_id,
                self.ctx.api_key_id,
            )
        try:
            await self.session.flush()
        except IntegrityError as exc:  # the new contact was deleted under us
            raise ContactReferenceInvalid() from exc
        if read_before is not None:
            await self.read_models.deal_written(before=before, after=deal)
            events.record_update(
                self.session, self.ctx, EventType.DEAL_UPDATED, read_before, _read(deal)
            )
        return deal

    async def delete(self, deal_id: int, *, expected: ExpectedVersion | None = None) -> None:
        """Moves the deal to the trash with its live tasks (hidden with it, and its timeline
        with it); it leaves the analytics at once. `restore` brings all of it back."""
        deal = await self.get(deal_id, lock=RowLock.UPDATE)
        ensure_can_modify(self.ctx, deal.owner_id, "deals")
        ensure_version(expected, deal.id, deal.updated_at)
        before = DealFigures.of(deal)
        gone = _read(deal)
        # Its tasks go with it, stamped with the deal's own `deleted_at` (which is how restore
        # knows them); each has its event, as if deleted one by one. Its comments and timeline
        # are hidden with the deal, without events of their own (`deal.deleted` says it).
        tasks = await self.tasks.of_deal(deal.id)
        gone_tasks = [TaskRead.model_validate(task) for task in tasks]
        at = utcnow()
        for task in tasks:
            put_in_trash(task, at)
        await self.deals.trash(deal, at)
        await self.read_models.deal_written(before=before, after=None)
        for task_read in gone_tasks:
            events.record(self.session, self.ctx, EventType.TASK_DELETED, task_read)
        events.record(self.session, self.ctx, EventType.DEAL_DELETED, gone)

    async def restore(self, deal_id: int) -> Deal:
        """Bring a deal back from the trash with the tasks that went with it and its timeline
        (404 if it is not in the trash). Who may delete it may restore it. Its contact must be
        live: 409 `CONTACT_IN_TRASH` otherwise (restore the contact first), nothing changed."""
        deal = await self.trash.deal(deal_id, lock=RowLock.UPDATE)
        if deal is None:
            raise DealNotFound()
        ensure_can_modify(self.ctx, deal.owner_id, "deals")
        # A share lock, as on create: the contact cannot go to the trash until we commit.
        if await self.contacts.get(deal.contact_id, lock=RowLock.SHARE) is None:
            raise ContactInTrash()
        tasks = await self.trash.tasks_trashed_with(deal)
        deal.deleted_at = None
        for task in tasks:
            task.deleted_at = None
        await self.session.flush()
        await self.read_models.deal_written(before=None, after=deal)
        events.record(self.session, self.ctx, EventType.DEAL_RESTORED, _read(deal))
        for task in tasks:
            events.record(
                self.session, self.ctx, EventType.TASK_RESTORED, TaskRead.model_validate(task)
            )
        return deal

    async def _stage(self, pipeline_id: int | None, key: str | None) -> StageRef:
        """The pipeline (None: the default) and stage (None: its first) a write puts a deal
        on, locked until the write commits (see the module); the errors a client gets for
        either."""
        place = await self.pipelines.stage_ref(pipeline_id, key, lock=RowLock.KEY_SHARE)
        if place is None and key is None:
            # Its first stage was deleted while this write waited for its lock: the stage
            # that is first now (a new statement sees the deletion).
            place = await self.pipelines.stage_ref(pipeline_id, None, lock=RowLock.KEY_SHARE)
        if place is not None:
            return place
        if pipeline_id is not None and await self.pipelines.get(pipeline_id) is None:
            raise PipelineReferenceInvalid()
        if key is not None and key in await self.pipelines.known_keys():
            raise StageNotInPipeline()
        raise UnknownStage(("body", "stage"), str(key), "the deal's pipeline")

    async def _ensure_contact(self, contact_id: int) -> None:
        # A share lock keeps the contact from being deleted until this transaction commits.
        if await self.contacts.get(contact_id, lock=RowLock.SHARE) is None:
            raise ContactReferenceInvalid()

    async def _ensure_company(self, company_id: int) -> None:
        # A share lock keeps the company from being deleted until this transaction commits.
        if await self.companies.get(company_id, lock=RowLock.SHARE) is None:
            raise CompanyReferenceInvalid()


async def check_deal_filters(
    session: AsyncSession, organization_id: int, filters: DealFilters
) -> None:
    """Each `stage` filtered on (list, export) must be a stage key of the organization's
    pipelines (of the `pipeline_id` filtered on, if any): 422 otherwise, as an unknown enum
    value was."""
    if not filters.stages:
        return
    known = await PipelineRepository(session, organization_id).known_keys(filters.pipeline_id)
    for index, key in enumerate(filters.stages):
        if key not in known:
            where = "this pipeline" if filters.pipeline_id else "this organization's pipelines"
            raise UnknownStage(("query", "stage", index), key, where)


def _read(deal: Deal) -> DealRead:
    return DealRead.model_validate(deal)


@dataclass(frozen=True, slots=True)
class _Rank:
    rank: int
