"""Pipelines and their stages (contract section 17), and the deals' side of them: which
deals a pipeline or a stage holds, and moving a stage's deals to another stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, exists, func, select, update
from sqlalchemy.orm import aliased

from app.models import Deal, Pipeline, PipelineStage
from app.models.pipeline import DEFAULT_PIPELINE_NAME, DEFAULT_STAGES
from app.repositories.base import RowLock, TenantRepository, live, with_lock


@dataclass(frozen=True, slots=True)
class StageRef:
    """A stage as a deal write checks it: its pipeline, key and rank (position)."""

    pipeline_id: int
    key: str
    rank: int


class PipelineRepository(TenantRepository):
    def _pipelines(self) -> Select[Pipeline]:
        return select(Pipeline).where(Pipeline.organization_id == self.organization_id)

    async def all(self) -> Sequence[Pipeline]:
        """Every pipeline, oldest first (an organization has a handful)."""
        rows = await self.session.scalars(self._pipelines().order_by(Pipeline.id))
        return rows.all()

    async def get(self, pipeline_id: int, *, lock: RowLock | None = None) -> Pipeline | None:
        query = self._pipelines().where(Pipeline.id == pipeline_id)
        pipeline: Pipeline | None = await self.session.scalar(with_lock(query, lock))
        return pipeline

    async def default(self, *, lock: RowLock | None = None) -> Pipeline | None:
        query = self._pipelines().where(Pipeline.is_default)
        pipeline: Pipeline | None = await self.session.scalar(with_lock(query, lock))
        return pipeline

    async def stages(self, pipeline_ids: Sequence[int]) -> dict[int, list[PipelineStage]]:
        """The stages of each pipeline, in position order."""
        if not pipeline_ids:
            return {}
        rows = await self.session.scalars(
            select(PipelineStage)
            .where(
                PipelineStage.organization_id == self.organization_id,
                PipelineStage.pipeline_id.in_(sorted(pipeline_ids)),
            )
            .order_by(PipelineStage.pipeline_id, PipelineStage.position)
        )
        grouped: dict[int, list[PipelineStage]] = {pipeline_id: [] for pipeline_id in pipeline_ids}
        for stage in rows:
            grouped[stage.pipeline_id].append(stage)
        return grouped

    async def stage(
        self, pipeline_id: int, key: str, *, lock: RowLock | None = None
    ) -> PipelineStage | None:
        query = select(PipelineStage).where(
            PipelineStage.organization_id == self.organization_id,
            PipelineStage.pipeline_id == pipeline_id,
            PipelineStage.key == key,
        )
        return await self.session.scalar(with_lock(query, lock))

    async def stage_ref(
        self, pipeline_id: int | None, key: str | None, *, lock: RowLock | None = None
    ) -> StageRef | None:
        """A stage for a deal write, pipeline (None: the default) and stage (None: its first)
        both locked with `lock` (the deal write's KEY SHARE: neither can be deleted before it
        commits, while renames and reorders go on). None: no such pipeline or stage here."""
        query: Any = (
            select(PipelineStage.pipeline_id, PipelineStage.key, PipelineStage.position)
            .join(
                Pipeline,
                (Pipeline.organization_id == PipelineStage.organization_id)
                & (Pipeline.id == PipelineStage.pipeline_id),
            )
            .where(PipelineStage.organization_id == self.organization_id)
        )
        if pipeline_id is None:
            query = query.where(Pipeline.is_default)
        else:
            query = query.where(Pipeline.id == pipeline_id)
        if key is None:
            first = aliased(PipelineStage)
            lowest = (
                select(func.min(first.position))
                .where(first.pipeline_id == PipelineStage.pipeline_id)
                .scalar_subquery()
            )
            query = query.where(PipelineStage.position == lowest)
        else:
            query = query.where(PipelineStage.key == key)
        row = (await self.session.execute(with_lock(query, lock))).first()
        return None if row is None else StageRef(row.pipeline_id, row.key, row.position)

    async def rank(self, pipeline_id: int, key: str) -> int | None:
        """A stage's rank (position), unlocked: a deal's current stage."""
        stage = await self.stage(pipeline_id, key)
        return None if stage is None else stage.position

    async def known_keys(self, pipeline_id: int | None = None) -> set[str]:
        """The stage keys of the organization's pipelines (or of one of them)."""
        query = select(PipelineStage.key).where(
            PipelineStage.organization_id == self.organization_id
        )
        if pipeline_id is not None:
            query = query.where(PipelineStage.pipeline_id == pipeline_id)
        return set((await self.session.scalars(query.distinct())).all())

    async def add(self, pipeline: Pipeline, stages: Sequence[PipelineStage]) -> Pipeline:
        pipeline.organization_id = self.organization_id
        self.session.add(pipeline)
        await self.session.flush()
        for stage in stages:
            stage.organization_id = self.organization_id
            stage.pipeline_id = pipeline.id
        self.session.add_all(stages)
        await self.session.flush()
        return pipeline

    async def add_default(self, at: datetime) -> Pipeline:
        """The default pipeline every organization starts with (the four stages of
        section 6)."""
        stages = [
            PipelineStage(key=key, name=name, position=position, probability=probability)
            for position, (key, name, probability) in enumerate(DEFAULT_STAGES)
        ]
        pipeline = Pipeline(
            name=DEFAULT_PIPELINE_NAME, is_default=True, created_at=at, updated_at=at
        )
        return await self.add(pipeline, stages)

    async def clear_default(self) -> None:
        await self.session.execute(
            update(Pipeline)
            .where(Pipeline.organization_id == self.organization_id, Pipeline.is_default)
            .values(is_default=False)
            .execution_options(synchronize_session="fetch")
        )

    async def delete(self, pipeline: Pipeline) -> None:
        """The pipeline and its stages (ON DELETE CASCADE)."""
        await self.session.execute(
            delete(PipelineStage).where(
                PipelineStage.organization_id == self.organization_id,
                PipelineStage.pipeline_id == pipeline.id,
            )
        )
        await self.session.delete(pipeline)
        await self.session.flush()

    async def delete_stage(self, stage: PipelineStage) -> None:
        await self.session.delete(stage)
        await self.session.flush()

    # --- their deals ---------------------------------------------------------------------

    async def has_deals(self, pipeline_id: int, stage: str | None = None) -> bool:
        """Whether deals, live or in the trash (they may be restored), are in the pipeline
        (or at one of its stages)."""
        condition = exists().where(
            Deal.organization_id == self.organization_id, Deal.pipeline_id == pipeline_id
        )
        if stage is not None:
            condition = condition.where(Deal.stage == stage)
        return bool(await self.session.scalar(select(condition)))

    async def live_deals_at(self, pipeline_id: int, stage: str) -> Sequence[Deal]:
        """The live deals at a stage, locked (in id order, as every writer locks them)."""
        query = (
            select(Deal)
            .where(
                Deal.organization_id == self.organization_id,
                Deal.pipeline_id == pipeline_id,
                Deal.stage == stage,
                live(Deal),
            )
            .order_by(Deal.id)
        )
        return (await self.session.scalars(with_lock(query, RowLock.UPDATE))).all()

    async def move_trashed_deals(self, pipeline_id: int, stage: str, to: str) -> int:
        """Move the deals in the trash at a stage to another stage of the pipeline; how many
        (they are in no running total, and have no events while in the trash)."""
        result = await self.session.execute(
            update(Deal)
            .where(
                Deal.organization_id == self.organization_id,
                Deal.pipeline_id == pipeline_id,
                Deal.stage == stage,
                Deal.deleted_at.is_not(None),
            )
            .values(stage=to)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
