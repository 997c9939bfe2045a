"""Pipelines (contract section 17): each organization's pipelines and their ordered stages.

Owners and admins manage them (`MANAGE_ORGANIZATION`); every member reads them. Every
organization has exactly one default pipeline (a partial unique index says so in the
database), created with it (`create_default`): where a deal goes when none is named.

**Stages.** A stage's `key` never changes (deals hold it in `stage`); its `name`,
`probability` and `position` do. Positions stay 0 to n-1: adding, moving or deleting a stage
moves the others. A change of a pipeline's stages locks the pipeline row (`NO KEY UPDATE`) so
that two such changes run one after the other; deal writes hold `KEY SHARE` on the pipeline
and stage they check (`app.services.deals`), which a rename or reorder does not wait for, but
a deletion does.

**Deleting a stage** that deals are at (live or in the trash: they may be restored) needs
`move_deals_to`, another stage of the pipeline: in the same transaction each live deal moves
there with its `stage_changed` timeline entry and `deal.updated` event, the deals in the trash
move silently (no events while in the trash), and the stage's running totals join the
target's (`ReadModels.stage_merged`), so analytics stay exact without a scan.

**Analytics** are cached under a version every pipeline change moves
(`ReadModels.pipelines_written`): a rename, a reorder or a new probability shows at once."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.errors import (
    DefaultPipelineRequired,
    LastStage,
    PipelineHasDeals,
    PipelineIsDefault,
    PipelineNotFound,
    StageHasDeals,
    StageKeyTaken,
    StageLimitReached,
    StageMoveTargetInvalid,
    StageNotFound,
)
from app.core.permissions import Permission
from app.core.tenancy import TenantContext
from app.db.types import utcnow
from app.models import ActivityType, Pipeline, PipelineStage
from app.repositories.activities import ActivityRepository
from app.repositories.base import RowLock
from app.repositories.pipelines import PipelineRepository
from app.schemas.deal import DealRead
from app.schemas.event import EventType
from app.schemas.pipeline import (
    MAX_STAGES,
    PipelineCreate,
    PipelineRead,
    PipelineUpdate,
    StageAdd,
    StageRead,
    StageUpdate,
)
from app.services import events
from app.services.read_models import ReadModels

_MANAGERS_ONLY = "Only an owner or admin may change the organization's pipelines."


async def create_default(session: AsyncSession, organization_id: int) -> Pipeline:
    """A new organization's default pipeline. Part of its founding: like the organization
    itself, it has no event of its own (the founding's event is `member.added`)."""
    pipeline = await PipelineRepository(session, organization_id).add_default(utcnow())
    events.founding(session)
    return pipeline


class PipelineService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, cache: Cache) -> None:
        self.session = session
        self.ctx = ctx
        self.pipelines = PipelineRepository(session, ctx.organization_id)
        self.activities = ActivityRepository(session, ctx.organization_id)
        self.read_models = ReadModels(session, ctx.organization_id, cache)

    # --- reads --------------------------------------------------------------------------

    async def all(self) -> list[PipelineRead]:
        pipelines = await self.pipelines.all()
        stages = await self.pipelines.stages([pipeline.id for pipeline in pipelines])
        return [_read(pipeline, stages[pipeline.id]) for pipeline in pipelines]

    async def get(self, pipeline_id: int) -> PipelineRead:
        pipeline = await self._pipeline(pipeline_id)
        return await self._read(pipeline)

    # --- pipelines ----------------------------------------------------------------------

    async def create(self, data: PipelineCreate) -> PipelineRead:
        """A new pipeline (never the default: `PATCH is_default` makes it one)."""
        self._require_manager()
        stages = [
            PipelineStage(
                key=stage.key, name=stage.name, position=position, probability=stage.probability
            )
            for position, stage in enumerate(data.stages)
        ]
        pipeline = await self.pipelines.add(Pipeline(name=data.name, is_default=False), stages)
        created = _read(pipeline, stages)
        events.record(self.session, self.ctx, EventType.PIPELINE_CREATED, created)
        await self.read_models.pipelines_written()
        return created

    async def update(self, pipeline_id: int, data: PipelineUpdate) -> PipelineRead:
        """Rename it, or make it the default (the former default stops being it, in the same
        transaction, with its own `pipeline.updated`)."""
        pipeline = await self._pipeline(pipeline_id, lock=RowLock.NO_KEY_UPDATE)
        self._require_manager()
        before = await self._read(pipeline)
        changes = data.changes()
        if changes.get("is_default") is False and pipeline.is_default:
            raise DefaultPipelineRequired()
        changed = False
        if "name" in changes and changes["name"] != pipeline.name:
            pipeline.name = changes["name"]
            changed = True
        if changes.get("is_default") and not pipeline.is_default:
            # After the organization's row (`_pipeline`): two switches run one after the
            # other, and the second finds the first's default as the former one (and says so
            # in its events) instead of unsetting it unseen.
            former = await self.pipelines.default(lock=RowLock.NO_KEY_UPDATE)
            former_before = None if former is None else await self._read(former)
            await self.pipelines.clear_default()
            pipeline.is_default = True
            try:
                await self.session.flush()
            except IntegrityError as exc:  # a concurrent change made another one the default
                raise DefaultPipelineRequired(
                    "Another pipeline became the default meanwhile: read the pipelines again."
                ) from exc
            if former is not None and former_before is not None:
                await self.session.refresh(former)
                events.record_update(
                    self.session,
                    self.ctx,
                    EventType.PIPELINE_UPDATED,
                    former_before,
                    await self._read(former),
                )
            changed = True
        if not changed:
            return before
        return await self._changed(pipeline, before)

    async def delete(self, pipeline_id: int) -> None:
        """409 while it is the default or holds deals (live or in the trash)."""
        # Exclusive: deal writes hold KEY SHARE on the pipeline they put a deal in, so those
        # that got in first have committed before the check below, and later ones find it
        # gone.
        pipeline = await self._pipeline(pipeline_id, lock=RowLock.UPDATE)
        self._require_manager()
        if pipeline.is_default:
            raise PipelineIsDefault()
        if await self.pipelines.has_deals(pipeline.id):
            raise PipelineHasDeals()
        gone = await self._read(pipeline)
        await self.pipelines.delete(pipeline)
        events.record(self.session, self.ctx, EventType.PIPELINE_DELETED, gone)

    # --- stages -------------------------------------------------------------------------

    async def add_stage(self, pipeline_id: int, data: StageAdd) -> PipelineRead:
        pipeline = await self._pipeline(pipeline_id, lock=RowLock.NO_KEY_UPDATE)
        self._require_manager()
        before = await self._read(pipeline)
        stages = await self._stages(pipeline)
        if any(stage.key == data.key for stage in stages):
            raise StageKeyTaken()
        if len(stages) >= MAX_STAGES:
            raise StageLimitReached()
        position = len(stages) if data.position is None else min(data.position, len(stages))
        stage = PipelineStage(
            organization_id=self.ctx.organization_id,
            pipeline_id=pipeline.id,
            key=data.key,
            name=data.name,
            probability=data.probability,
            position=position,
        )
        stages.insert(position, stage)
        self.session.add(stage)
        _renumber(stages)
        return await self._changed(pipeline, before)

    async def update_stage(self, pipeline_id: int, key: str, data: StageUpdate) -> PipelineRead:
        """Rename it, give it a new probability, move it (the stages between move one place
        to make room)."""
        pipeline = await self._pipeline(pipeline_id, lock=RowLock.NO_KEY_UPDATE)
        self._require_manager()
        before = await self._read(pipeline)
        stages = await self._stages(pipeline)
        stage = _find(stages, key)
        changes = data.changes()
        if "name" in changes:
            stage.name = changes["name"]
        if "probability" in changes:
            stage.probability = changes["probability"]
        if "position" in changes:
            stages.remove(stage)
            stages.insert(min(changes["position"], len(stages)), stage)
            _renumber(stages)
        if _read(pipeline, stages) == before:
            return before  # nothing changed: nothing written
        return await self._changed(pipeline, before)

    async def delete_stage(
        self, pipeline_id: int, key: str, move_deals_to: str | None
    ) -> PipelineRead:
        """See the module: 409 `LAST_STAGE`, 409 `STAGE_HAS_DEALS` without `move_deals_to`,
        400 `STAGE_MOVE_TARGET_INVALID` for a target that is not another stage here."""
        pipeline = await self._pipeline(pipeline_id, lock=RowLock.NO_KEY_UPDATE)
        self._require_manager()
        before = await self._read(pipeline)
        stages = await self._stages(pipeline)
        stage = _find(stages, key)
        # Exclusive on the stage: deal writes that checked it (KEY SHARE) have committed, and
        # later ones find it gone.
        await self.pipelines.stage(pipeline.id, key, lock=RowLock.UPDATE)
        if len(stages) == 1:
            raise LastStage()
        if move_deals_to is not None and (
            move_deals_to == key or all(other.key != move_deals_to for other in stages)
        ):
            raise StageMoveTargetInvalid()
        if move_deals_to is None:
            if await self.pipelines.has_deals(pipeline.id, key):
                raise StageHasDeals()
        else:
            await self._move_deals(pipeline.id, key, move_deals_to)
        stages.remove(stage)
        try:
            await self.pipelines.delete_stage(stage)
        except IntegrityError as exc:
            # A deal came to the stage after the move (a deal restored from the trash, which
            # checks no stage): the foreign key refused to leave it on a deleted stage.
            raise StageHasDeals("A deal came to this stage meanwhile: try again.") from exc
        _renumber(stages)
        return await self._changed(pipeline, before)

    async def _move_deals(self, pipeline_id: int, key: str, to: str) -> None:
        """Every deal at stage `key` to stage `to` of the same pipeline (see the module)."""
        deals = await self.pipelines.live_deals_at(pipeline_id, key)
        befores = [DealRead.model_validate(deal) for deal in deals]
        for deal in deals:
            deal.stage = to
            await self.activities.add(
                deal.id,
                ActivityType.STAGE_CHANGED,
                {"old_stage": key, "new_stage": to},
                self.ctx.user_id,
                self.ctx.api_key_id,
            )
        await self.session.flush()
        for before, deal in zip(befores, deals, strict=True):
            events.record_update(
                self.session,
                self.ctx,
                EventType.DEAL_UPDATED,
                before,
                DealRead.model_validate(deal),
            )
        # Declared whether or not a row moved: the statement ran (see `events`).
        events.only_in_trash(self.session, "deal")
        await self.pipelines.move_trashed_deals(pipeline_id, key, to)
        await self.read_models.stage_merged(pipeline_id, key, to)

    # --- helpers ------------------------------------------------------------------------

    async def _changed(self, pipeline: Pipeline, before: PipelineRead) -> PipelineRead:
        """A change of `pipeline` (got by `_pipeline` with a lock, which moved the pipelines'
        version) written and told: its `pipeline.updated` event, and the pipeline as it is."""
        pipeline.updated_at = utcnow()
        await self.session.flush()
        after = await self._read(pipeline)
        events.record_update(self.session, self.ctx, EventType.PIPELINE_UPDATED, before, after)
        return after

    def _require_manager(self) -> None:
        # After the pipeline is found: another organization's is a 404, whatever the role.
        self.ctx.require(Permission.MANAGE_ORGANIZATION, _MANAGERS_ONLY)

    async def _pipeline(self, pipeline_id: int, *, lock: RowLock | None = None) -> Pipeline:
        """The pipeline; with `lock`, for a change: the organization's row is locked first (its
        pipelines' version moves, and its cached analytics go at commit: the one call of
        `pipelines_written` for the change), so that every change of an organization's
        pipelines takes its locks in one order, that row then the pipelines, and two changes
        wait for each other instead of deadlocking (a switch of the default locks two)."""
        if lock is not None:
            await self.read_models.pipelines_written()
        pipeline = await self.pipelines.get(pipeline_id, lock=lock)
        if pipeline is None:
            raise PipelineNotFound()
        return pipeline

    async def _stages(self, pipeline: Pipeline) -> list[PipelineStage]:
        return (await self.pipelines.stages([pipeline.id]))[pipeline.id]

    async def _read(self, pipeline: Pipeline) -> PipelineRead:
        return _read(pipeline, await self._stages(pipeline))


def _find(stages: Sequence[PipelineStage], key: str) -> PipelineStage:
    for stage in stages:
        if stage.key == key:
            return stage
    raise StageNotFound()


def _renumber(stages: Sequence[PipelineStage]) -> None:
    for position, stage in enumerate(stages):
        if stage.position != position:
            stage.position = position


def _read(pipeline: Pipeline, stages: Sequence[PipelineStage]) -> PipelineRead:
    ordered = sorted(stages, key=lambda stage: stage.position)
    return PipelineRead(
        id=pipeline.id,
        organization_id=pipeline.organization_id,
        name=pipeline.name,
        is_default=pipeline.is_default,
        stages=[
            StageRead(
                key=stage.key,
                name=stage.name,
                position=stage.position,
                probability=stage.probability,
            )
            for stage in ordered
        ],
        created_at=pipeline.created_at,
        updated_at=pipeline.updated_at,
    )
