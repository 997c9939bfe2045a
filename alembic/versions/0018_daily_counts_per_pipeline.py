"""Deals created per UTC day counted per pipeline: `deal_daily_counts.pipeline_id`.

The summary is a pipeline's figures (migration 0017); its `new_deals_last_n_days` now is too.
The table is made again with `pipeline_id` in its key (no foreign key, like `deal_stats`: a
pipeline is deleted only when it has no deals, so its rows sum to zero by then), its triggers
follow a deal moved to another pipeline as they follow a change of currency, and it is filled
from the live deals. Downgrading makes it again per organization, as migrations 0006 and 0011
left it.

The triggers keep the rules of those migrations: live deals only (trashing counts a deal out
of its creation day, restoring counts it back in), nothing for a deal deleted with its
organization, and a deal that moves between two rows locks them in key order.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SLOTS = 16  # app.models.deal_stats.STAT_SLOTS
_DAY = {
    "postgresql": "(created_at AT TIME ZONE 'UTC')::date",
    "sqlite": "date(created_at)",
}


def _key(per_pipeline: bool) -> list[str]:
    """The columns of a count's key, without its slot."""
    return ["organization_id", *(["pipeline_id"] if per_pipeline else []), "day", "currency"]


def _row_values(row: str, per_pipeline: bool, day: str) -> list[str]:
    """`row`'s (NEW or OLD) values of the key, `day` being the creation day's expression."""
    return [
        day.replace("created_at", f"{row}.created_at") if column == "day" else f"{row}.{column}"
        for column in _key(per_pipeline)
    ]


def _row_key(row: str, per_pipeline: bool, day: str) -> str:
    return ", ".join(_row_values(row, per_pipeline, day))


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_add_signature(per_pipeline: bool) -> str:
    pipeline = "bigint, " if per_pipeline else ""
    return f"deal_daily_counts_add(bigint, {pipeline}date, varchar, bigint, bigint)"


def _pg_create(per_pipeline: bool) -> list[str]:
    key = ", ".join(_key(per_pipeline))
    parameters = ", ".join(f"p_{column}" for column in _key(per_pipeline))
    declared = ", ".join(
        f"p_{column} {'date' if column == 'day' else 'varchar' if column == 'currency' else 'bigint'}"
        for column in _key(per_pipeline)
    )
    day = _DAY["postgresql"]

    def add(row: str, delta: int) -> str:
        return (
            f"PERFORM deal_daily_counts_add({_row_key(row, per_pipeline, day)}, {row}.id, {delta});"
        )

    old, new = (f"({_row_key(row, per_pipeline, day)})" for row in ("OLD", "NEW"))
    watched = "organization_id, " + ("pipeline_id, " if per_pipeline else "")
    return [  # constants only
        # Adds `delta` to one count, creating its row if needed.
        f"""
        CREATE FUNCTION deal_daily_counts_add(
            {declared}, p_deal_id bigint, p_delta bigint
        ) RETURNS void LANGUAGE sql AS $$
            INSERT INTO deal_daily_counts ({key}, slot, deal_count)
            VALUES ({parameters}, (p_deal_id % {SLOTS})::smallint, p_delta)
            ON CONFLICT ({key}, slot)
            DO UPDATE SET deal_count = deal_daily_counts.deal_count + EXCLUDED.deal_count
        $$
        """,  # noqa: S608
        f"""
        CREATE FUNCTION deal_daily_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                IF NEW.deleted_at IS NULL THEN
                    {add("NEW", 1)}
                END IF;
            ELSIF TG_OP = 'DELETE' THEN
                -- A trashed deal was counted out when it was trashed. Not when the deal goes
                -- with its organization (ON DELETE CASCADE): the counts go too, and a row for
                -- a deleted organization would break its foreign key.
                IF OLD.deleted_at IS NULL
                        AND EXISTS (SELECT 1 FROM organizations WHERE id = OLD.organization_id)
                        THEN
                    {add("OLD", -1)}
                END IF;
            ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NOT NULL THEN
                RETURN NULL;
            ELSIF NEW.deleted_at IS NOT NULL THEN  -- to the trash
                {add("OLD", -1)}
            ELSIF OLD.deleted_at IS NOT NULL THEN  -- restored
                {add("NEW", 1)}
            ELSIF {old} = {new} THEN
                RETURN NULL;
            -- Two rows: lock them in key order, as every writer does, so that two deals
            -- moving in opposite directions cannot deadlock.
            ELSIF {new} < {old} THEN
                {add("NEW", 1)}
                {add("OLD", -1)}
            ELSE
                {add("OLD", -1)}
                {add("NEW", 1)}
            END IF;
            RETURN NULL;
        END
        $$
        """,  # noqa: S608
        """
        CREATE TRIGGER deals_daily_counts_insert_delete AFTER INSERT OR DELETE ON deals
        FOR EACH ROW EXECUTE FUNCTION deal_daily_counts_track()
        """,
        f"""
        CREATE TRIGGER deals_daily_counts_update
        AFTER UPDATE OF {watched}created_at, currency, deleted_at ON deals
        FOR EACH ROW EXECUTE FUNCTION deal_daily_counts_track()
        """,
    ]


def _pg_drop(per_pipeline: bool) -> list[str]:
    return [
        "DROP TRIGGER deals_daily_counts_update ON deals",
        "DROP TRIGGER deals_daily_counts_insert_delete ON deals",
        "DROP FUNCTION deal_daily_counts_track()",
        f"DROP FUNCTION {_pg_add_signature(per_pipeline)}",
    ]


# --- SQLite ----------------------------------------------------------------------------------

_SQLITE_TRIGGERS = ("insert", "delete", "update", "trash", "restore")


def _sqlite_create(per_pipeline: bool) -> list[str]:
    """Writers are serialised on SQLite, so the order of two rows is free."""
    key = ", ".join(_key(per_pipeline))
    day = _DAY["sqlite"]

    def add(row: str, delta: int) -> str:
        return (  # constants only
            f"INSERT INTO deal_daily_counts ({key}, slot, deal_count) "  # noqa: S608
            f"VALUES ({_row_key(row, per_pipeline, day)}, {row}.id % {SLOTS}, {delta}) "
            f"ON CONFLICT ({key}, slot) "
            "DO UPDATE SET deal_count = deal_count + excluded.deal_count;"
        )

    moved = " OR ".join(
        f"{old} IS NOT {new}"
        for old, new in zip(
            _row_values("OLD", per_pipeline, day),
            _row_values("NEW", per_pipeline, day),
            strict=True,
        )
    )
    watched = "organization_id, " + ("pipeline_id, " if per_pipeline else "")
    return [
        f"""
        CREATE TRIGGER deals_daily_counts_insert AFTER INSERT ON deals
        WHEN NEW.deleted_at IS NULL
        BEGIN {add("NEW", 1)} END
        """,
        f"""
        CREATE TRIGGER deals_daily_counts_delete AFTER DELETE ON deals
        WHEN OLD.deleted_at IS NULL
            AND EXISTS (SELECT 1 FROM organizations WHERE id = OLD.organization_id)
        BEGIN {add("OLD", -1)} END
        """,  # noqa: S608
        f"""
        CREATE TRIGGER deals_daily_counts_update
        AFTER UPDATE OF {watched}created_at, currency, deleted_at ON deals
        WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NULL AND ({moved})
        BEGIN {add("OLD", -1)} {add("NEW", 1)} END
        """,
        f"""
        CREATE TRIGGER deals_daily_counts_trash AFTER UPDATE OF deleted_at ON deals
        WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL
        BEGIN {add("OLD", -1)} END
        """,
        f"""
        CREATE TRIGGER deals_daily_counts_restore AFTER UPDATE OF deleted_at ON deals
        WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL
        BEGIN {add("NEW", 1)} END
        """,
    ]


# --- Both ------------------------------------------------------------------------------------


def _counts_per(per_pipeline: bool) -> None:
    """Drop the table and its triggers as the other shape left them; make them again in this
    shape, filled from the live deals (one row per key, slot 0)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        drop = _pg_drop(not per_pipeline)
    else:
        drop = [f"DROP TRIGGER deals_daily_counts_{name}" for name in _SQLITE_TRIGGERS]
    for statement in drop:
        op.execute(statement)
    op.drop_table("deal_daily_counts")
    key = _key(per_pipeline)
    types = {"organization_id": ID, "pipeline_id": ID, "day": sa.Date(), "currency": sa.String(3)}
    op.create_table(
        "deal_daily_counts",
        *(sa.Column(column, types[column], nullable=False) for column in key),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("deal_count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_deal_daily_counts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*key, "slot", name=op.f("pk_deal_daily_counts")),
    )
    create = _pg_create(per_pipeline) if dialect == "postgresql" else _sqlite_create(per_pipeline)
    for statement in create:
        op.execute(statement)
    columns = ", ".join(key)
    selected = ", ".join(_DAY[dialect] if column == "day" else column for column in key)
    groups = ", ".join(str(position) for position in range(1, len(key) + 1))
    op.execute(  # constants only
        f"INSERT INTO deal_daily_counts ({columns}, slot, deal_count) "  # noqa: S608
        f"SELECT {selected}, 0, count(*) FROM deals WHERE deleted_at IS NULL GROUP BY {groups}"
    )


def upgrade() -> None:
    _counts_per(per_pipeline=True)


def downgrade() -> None:
    _counts_per(per_pipeline=False)
