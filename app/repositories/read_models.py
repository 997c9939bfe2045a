"""The SQL behind `app.services.read_models`: data versions, the running deal totals they live
in, the deal counts per custom field value, and the rebuild of the precomputed figures from
the deals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Date,
    SmallInteger,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.models import (
    CustomFieldDefinition,
    CustomFieldEntity,
    Deal,
    DealDailyCount,
    DealStat,
    DealStatus,
    DealValueCount,
    Organization,
)
from app.models.deal_stats import COUNTED_TYPES, STAT_SLOTS
from app.repositories.base import TenantRepository, live
from app.repositories.custom_fields import value_text


@dataclass(frozen=True, slots=True, order=True)
class StatKey:
    """One running total of `deal_stats` (a slot of it)."""

    pipeline_id: int
    currency: str
    status: DealStatus
    stage: str
    slot: int = 0

    @classmethod
    def of(
        cls, pipeline_id: int, currency: str, status: DealStatus, stage: str, deal_id: int
    ) -> StatKey:
        # A deal always lands in the same slot, so its own moves touch one slot's rows.
        return cls(pipeline_id, currency, status, stage, deal_id % STAT_SLOTS)


_stats = DealStat.__table__.c
# Read on every analytics request and deal list (cache hits included): built once, on the table.
DEALS_VERSION = select(func.coalesce(func.sum(_stats.version), 0)).where(
    _stats.organization_id == bindparam("organization_id")
)

_organizations = Organization.__table__.c
_CONTACTS_VERSION = select(_organizations.contacts_version).where(
    _organizations.id == bindparam("organization_id")
)
# What analytics are cached under: the deals' version plus the pipelines' (both only grow,
# so their sum moves whenever either does).
ANALYTICS_VERSION = select(
    DEALS_VERSION.scalar_subquery()
    + select(_organizations.pipelines_version)
    .where(_organizations.id == bindparam("organization_id"))
    .scalar_subquery()
)
_MOVE_PIPELINES_VERSION = (
    update(Organization)
    .where(Organization.id == bindparam("organization_id"))
    .values(pipelines_version=Organization.pipelines_version + 1)
    .execution_options(synchronize_session=False)
)
_MOVE_CONTACTS_VERSION = (
    update(Organization)
    .where(Organization.id == bindparam("organization_id"))
    .values(contacts_version=Organization.contacts_version + 1)
    .execution_options(synchronize_session=False)
)


_stats_table: Any = DealStat.__table__
_STAT_KEY = ["organization_id", "pipeline_id", "currency", "status", "stage", "slot"]


def _upsert(builder: Any) -> Any:
    """Add a (count, amount) delta to one running total, creating its row if needed, and move
    the row's version."""
    statement = builder(DealStat.__table__).values(
        organization_id=bindparam("organization_id"),
        pipeline_id=bindparam("pipeline_id"),
        currency=bindparam("currency"),
        status=bindparam("status"),
        stage=bindparam("stage"),
        slot=bindparam("slot"),
        deal_count=bindparam("deal_count"),
        amount_sum=bindparam("amount_sum"),
        version=1,
    )
    return statement.on_conflict_do_update(
        index_elements=_STAT_KEY,
        set_={
            "deal_count": _stats.deal_count + statement.excluded.deal_count,
            "amount_sum": _stats.amount_sum + statement.excluded.amount_sum,
            "version": _stats.version + 1,
        },
    )


# Every deal write runs it once or twice: built once per dialect, on the table (Core).
_UPSERT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}

_counts: Any = DealValueCount.__table__.c


def _add_to_value_count(builder: Any) -> Any:
    """Add a delta to one deal count of a custom field value, creating its row if needed."""
    statement = builder(DealValueCount.__table__).values(
        organization_id=bindparam("organization_id"),
        key=bindparam("key"),
        value=bindparam("value"),
        slot=bindparam("slot"),
        deal_count=bindparam("deal_count"),
    )
    return statement.on_conflict_do_update(
        index_elements=["organization_id", "key", "value", "slot"],
        set_={"deal_count": _counts.deal_count + statement.excluded.deal_count},
    )


_ADD_TO_VALUE_COUNT = {
    "postgresql": _add_to_value_count(postgresql.insert),
    "sqlite": _add_to_value_count(sqlite.insert),
}


def utc_day(column: Any, dialect: str) -> Any:
    """The UTC calendar day of a timestamp column, as the database computes it (the same
    expression as the `deal_daily_counts` triggers)."""
    if dialect == "postgresql":
        # A literal, not a parameter: the expression is grouped by, and PostgreSQL matches
        # GROUP BY expressions by their text ($1 and $2 would differ).
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    return func.date(column)  # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS...'


class ReadModelRepository(TenantRepository):
    async def deals_version(self) -> int:
        total = await self.session.scalar(DEALS_VERSION, {"organization_id": self.organization_id})
        return int(total or 0)

    async def contacts_version(self) -> int:
        version = await self.session.scalar(
            _CONTACTS_VERSION, {"organization_id": self.organization_id}
        )
        return int(version or 0)

    async def move_contacts_version(self) -> None:
        await self.session.execute(
            _MOVE_CONTACTS_VERSION, {"organization_id": self.organization_id}
        )

    async def move_deals_version(self) -> None:
        """Move the deals' data version without changing any total (deals changed in a way
        no total sees); an organization with no totals row has no deal any read model holds."""
        first = (
            await self.session.execute(
                select(
                    _stats.pipeline_id, _stats.currency, _stats.status, _stats.stage, _stats.slot
                )
                .where(_stats.organization_id == self.organization_id)
                .order_by(
                    _stats.pipeline_id, _stats.currency, _stats.status, _stats.stage, _stats.slot
                )
                .limit(1)
            )
        ).first()
        if first is None:
            return
        await self.session.execute(
            update(DealStat)
            .where(
                _stats.organization_id == self.organization_id,
                _stats.pipeline_id == first.pipeline_id,
                _stats.currency == first.currency,
                _stats.status == first.status,
                _stats.stage == first.stage,
                _stats.slot == first.slot,
            )
            .values(version=_stats.version + 1)
        )

    async def move_pipelines_version(self) -> None:
        await self.session.execute(
            _MOVE_PIPELINES_VERSION, {"organization_id": self.organization_id}
        )

    async def merge_stage_totals(self, pipeline_id: int, stage: str, into: str) -> None:
        """Add the running totals of a stage to those of another stage of the same pipeline
        and delete its rows: what moving every live deal of the stage to the other one does
        to them (a deal keeps its slot), in two statements over a few dozen rows. The merged
        rows' versions are carried over, plus one per row, so the data version only grows."""
        source = DealStat.__table__.alias("source")
        moved = select(
            source.c.organization_id,
            source.c.pipeline_id,
            source.c.currency,
            source.c.status,
            literal(into, DealStat.stage.type).label("stage"),
            source.c.slot,
            source.c.deal_count,
            source.c.amount_sum,
            (source.c.version + 1).label("version"),
        ).where(
            source.c.organization_id == self.organization_id,
            source.c.pipeline_id == pipeline_id,
            source.c.stage == stage,
        )
        builder = postgresql.insert if self._dialect() == "postgresql" else sqlite.insert
        statement = builder(_stats_table).from_select(
            [
                "organization_id",
                "pipeline_id",
                "currency",
                "status",
                "stage",
                "slot",
                "deal_count",
                "amount_sum",
                "version",
            ],
            moved,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[
                "organization_id",
                "pipeline_id",
                "currency",
                "status",
                "stage",
                "slot",
            ],
            set_={
                "deal_count": _stats.deal_count + statement.excluded.deal_count,
                "amount_sum": _stats.amount_sum + statement.excluded.amount_sum,
                "version": _stats.version + statement.excluded.version,
            },
        )
        await self.session.execute(statement)
        await self.session.execute(
            delete(DealStat).where(
                DealStat.organization_id == self.organization_id,
                DealStat.pipeline_id == pipeline_id,
                DealStat.stage == stage,
            )
        )

    def _dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def apply_deal_totals(self, deltas: Mapping[StatKey, tuple[int, Decimal]]) -> None:
        """Add (count, amount) deltas to the running totals; each row touched moves its version.

        Keys are applied in sorted order, so concurrent transactions lock the rows in the same
        order and cannot deadlock on each other."""
        upsert = _UPSERT[self.session.get_bind().dialect.name]
        for key in sorted(deltas):
            count, amount = deltas[key]
            await self.session.execute(
                upsert,
                {
                    "organization_id": self.organization_id,
                    "pipeline_id": key.pipeline_id,
                    "currency": key.currency,
                    "status": key.status,
                    "stage": key.stage,
                    "slot": key.slot,
                    "deal_count": count,
                    "amount_sum": amount,
                },
            )

    async def counted_keys(self) -> frozenset[str]:
        """The deal custom fields whose values are counted (`DealValueCount`)."""
        keys = await self.session.scalars(
            select(CustomFieldDefinition.key).where(
                CustomFieldDefinition.organization_id == self.organization_id,
                CustomFieldDefinition.entity == CustomFieldEntity.DEAL,
                CustomFieldDefinition.type.in_(COUNTED_TYPES),
            )
        )
        return frozenset(keys)

    async def apply_value_counts(self, deltas: Mapping[tuple[str, str, int], int]) -> None:
        """Add deltas to the deal counts of (key, value, slot)s, in sorted order, as
        `apply_deal_totals` does and for the same reason."""
        await self.session.execute(
            _ADD_TO_VALUE_COUNT[self._dialect()],
            [
                {
                    "organization_id": self.organization_id,
                    "key": key,
                    "value": value,
                    "slot": slot,
                    "deal_count": deltas[key, value, slot],
                }
                for key, value, slot in sorted(deltas)
            ],
        )

    async def deals_with_value(self, key: str, value: str) -> int:
        """The live deals holding `value` in the counted custom field `key`."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(DealValueCount.deal_count), 0)).where(
                DealValueCount.organization_id == self.organization_id,
                DealValueCount.key == key,
                DealValueCount.value == value,
            )
        )
        return int(total or 0)

    async def forget_value_counts(self, key: str) -> None:
        """The counts of a custom field whose values were all removed (with its definition)."""
        await self.session.execute(
            delete(DealValueCount).where(
                DealValueCount.organization_id == self.organization_id,
                DealValueCount.key == key,
            )
        )

    async def rebuild_deal_figures(self) -> None:
        """Recompute this organization's running totals, daily creation counts and counts per
        custom field value from its deals (after bulk loads that bypassed them).

        The rebuilt totals start from the old version + 1, so the version still only grows."""
        previous = await self.deals_version()
        # In the order deal writes lock them: daily counts (their triggers), value counts,
        # running totals.
        await self._rebuild_daily_counts()
        await self._rebuild_value_counts()
        await self.session.execute(
            delete(DealStat).where(DealStat.organization_id == self.organization_id)
        )
        await self.session.execute(
            insert(DealStat).from_select(
                [
                    "organization_id",
                    "pipeline_id",
                    "currency",
                    "status",
                    "stage",
                    "deal_count",
                    "amount_sum",
                ],
                select(
                    Deal.organization_id,
                    Deal.pipeline_id,
                    Deal.currency,
                    Deal.status,
                    Deal.stage,
                    func.count(),
                    func.sum(Deal.amount),
                )
                .where(Deal.organization_id == self.organization_id, live(Deal))
                .group_by(
                    Deal.organization_id, Deal.pipeline_id, Deal.currency, Deal.status, Deal.stage
                ),
            )
        )
        # Carry the version over on one row. With no deals there are no rows and the version is
        # 0, which only an entry computed for an organization without deals can carry.
        first = (
            await self.session.execute(
                select(
                    DealStat.pipeline_id,
                    DealStat.currency,
                    DealStat.status,
                    DealStat.stage,
                    DealStat.slot,
                )
                .where(DealStat.organization_id == self.organization_id)
                .limit(1)
            )
        ).first()
        if first is not None:
            pipeline_id, currency, status, stage, slot = first
            await self.session.execute(
                update(DealStat)
                .where(
                    DealStat.organization_id == self.organization_id,
                    DealStat.pipeline_id == pipeline_id,
                    DealStat.currency == currency,
                    DealStat.status == status,
                    DealStat.stage == stage,
                    DealStat.slot == slot,
                )
                .values(version=previous + 1)
            )

    async def _rebuild_daily_counts(self) -> None:
        day = utc_day(Deal.created_at, self.session.get_bind().dialect.name)
        await self.session.execute(
            delete(DealDailyCount).where(DealDailyCount.organization_id == self.organization_id)
        )
        await self.session.execute(
            insert(DealDailyCount).from_select(
                ["organization_id", "pipeline_id", "day", "currency", "slot", "deal_count"],
                select(
                    Deal.organization_id,
                    Deal.pipeline_id,
                    day,
                    Deal.currency,
                    literal(0, SmallInteger),
                    func.count(),
                )
                .where(Deal.organization_id == self.organization_id, live(Deal))
                .group_by(Deal.organization_id, Deal.pipeline_id, day, Deal.currency),
            )
        )

    async def _rebuild_value_counts(self) -> None:
        await self.session.execute(
            delete(DealValueCount).where(DealValueCount.organization_id == self.organization_id)
        )
        for key in sorted(await self.counted_keys()):
            value = value_text(Deal, key, self._dialect())
            await self.session.execute(
                insert(DealValueCount).from_select(
                    ["organization_id", "key", "value", "slot", "deal_count"],
                    select(
                        Deal.organization_id,
                        literal(key, DealValueCount.key.type),
                        value,
                        literal(0, SmallInteger),
                        func.count(),
                    )
                    .where(
                        Deal.organization_id == self.organization_id,
                        live(Deal),
                        value.is_not(None),
                    )
                    .group_by(Deal.organization_id, value),
                )
            )
