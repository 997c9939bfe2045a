"""Deals created per organization, UTC day and currency, kept by triggers on `deals`.

"New deals in the last N days" then sums at most a few rows per day of the window instead of
counting up to a year of deals. The triggers run in the transaction of every statement that
inserts or deletes a deal or changes its `created_at` or `currency`, so the counts stay exact
whatever writes the deals. Each (organization, day, currency) is split over 16 rows by deal
id (`app.models.deal_stats.STAT_SLOTS`), so concurrent creations mostly lock different rows.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SLOTS = 16  # app.models.deal_stats.STAT_SLOTS

_POSTGRESQL = [
    # Adds `delta` to one count, creating its row if needed.
    """
    CREATE FUNCTION deal_daily_counts_add(
        p_organization_id bigint, p_day date, p_currency varchar, p_deal_id bigint, p_delta bigint
    ) RETURNS void LANGUAGE sql AS $$
        INSERT INTO deal_daily_counts (organization_id, day, currency, slot, deal_count)
        VALUES (p_organization_id, p_day, p_currency, (p_deal_id % 16)::smallint, p_delta)
        ON CONFLICT (organization_id, day, currency, slot)
        DO UPDATE SET deal_count = deal_daily_counts.deal_count + EXCLUDED.deal_count
    $$
    """,
    """
    CREATE FUNCTION deal_daily_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        old_day date;
        new_day date;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            PERFORM deal_daily_counts_add(
                NEW.organization_id, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.currency,
                NEW.id, 1);
        ELSIF TG_OP = 'DELETE' THEN
            -- Not when the deal goes with its organization (ON DELETE CASCADE): the counts
            -- go too, and a row for a deleted organization would break its foreign key.
            IF EXISTS (SELECT 1 FROM organizations WHERE id = OLD.organization_id) THEN
                PERFORM deal_daily_counts_add(
                    OLD.organization_id, (OLD.created_at AT TIME ZONE 'UTC')::date,
                    OLD.currency, OLD.id, -1);
            END IF;
        ELSE
            old_day := (OLD.created_at AT TIME ZONE 'UTC')::date;
            new_day := (NEW.created_at AT TIME ZONE 'UTC')::date;
            IF (OLD.organization_id, old_day, OLD.currency)
                    = (NEW.organization_id, new_day, NEW.currency) THEN
                RETURN NULL;
            END IF;
            -- Two rows: lock them in key order, as every writer does, so that two deals
            -- moving in opposite directions cannot deadlock.
            IF (NEW.organization_id, new_day, NEW.currency)
                    < (OLD.organization_id, old_day, OLD.currency) THEN
                PERFORM deal_daily_counts_add(
                    NEW.organization_id, new_day, NEW.currency, NEW.id, 1);
                PERFORM deal_daily_counts_add(
                    OLD.organization_id, old_day, OLD.currency, OLD.id, -1);
            ELSE
                PERFORM deal_daily_counts_add(
                    OLD.organization_id, old_day, OLD.currency, OLD.id, -1);
                PERFORM deal_daily_counts_add(
                    NEW.organization_id, new_day, NEW.currency, NEW.id, 1);
            END IF;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER deals_daily_counts_insert_delete AFTER INSERT OR DELETE ON deals
    FOR EACH ROW EXECUTE FUNCTION deal_daily_counts_track()
    """,
    """
    CREATE TRIGGER deals_daily_counts_update
    AFTER UPDATE OF organization_id, created_at, currency ON deals
    FOR EACH ROW EXECUTE FUNCTION deal_daily_counts_track()
    """,
]


def _sqlite_add(row: str, delta: int) -> str:
    return (  # constants only
        "INSERT INTO deal_daily_counts (organization_id, day, currency, slot, deal_count) "  # noqa: S608
        f"VALUES ({row}.organization_id, date({row}.created_at), {row}.currency, "
        f"{row}.id % {SLOTS}, {delta}) "
        "ON CONFLICT (organization_id, day, currency, slot) "
        "DO UPDATE SET deal_count = deal_count + excluded.deal_count;"
    )


_ORGANIZATION_EXISTS = "EXISTS (SELECT 1 FROM organizations WHERE id = OLD.organization_id)"

# SQLite stores the UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' (app.db.types.UTCDateTime):
# date() is their UTC day. Writers are serialised, so the order of the two rows is free. A
# deal deleted with its organization (ON DELETE CASCADE) is not counted down: its counts go
# with the organization. SQLite drops a table's triggers when a batch migration recreates
# the table: a later migration that alters `deals` there must create them again.
_SQLITE = [
    f"""
    CREATE TRIGGER deals_daily_counts_insert AFTER INSERT ON deals
    BEGIN {_sqlite_add("NEW", 1)} END
    """,
    f"""
    CREATE TRIGGER deals_daily_counts_delete AFTER DELETE ON deals
    WHEN {_ORGANIZATION_EXISTS}
    BEGIN {_sqlite_add("OLD", -1)} END
    """,
    f"""
    CREATE TRIGGER deals_daily_counts_update
    AFTER UPDATE OF organization_id, created_at, currency ON deals
    WHEN OLD.organization_id IS NOT NEW.organization_id
        OR date(OLD.created_at) IS NOT date(NEW.created_at)
        OR OLD.currency IS NOT NEW.currency
    BEGIN {_sqlite_add("OLD", -1)} {_sqlite_add("NEW", 1)} END
    """,
]

_DAY = {
    "postgresql": "(created_at AT TIME ZONE 'UTC')::date",
    "sqlite": "date(created_at)",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "deal_daily_counts",
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("deal_count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_deal_daily_counts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "day", "currency", "slot", name=op.f("pk_deal_daily_counts")
        ),
    )
    for statement in _POSTGRESQL if dialect == "postgresql" else _SQLITE:
        op.execute(statement)
    # Backfill from the deals that already exist (one row per day and currency, slot 0).
    op.execute(  # constants only
        "INSERT INTO deal_daily_counts (organization_id, day, currency, slot, deal_count) "  # noqa: S608
        f"SELECT organization_id, {_DAY[dialect]}, currency, 0, count(*) "
        "FROM deals GROUP BY 1, 2, 3"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER deals_daily_counts_update ON deals")
        op.execute("DROP TRIGGER deals_daily_counts_insert_delete ON deals")
        op.execute("DROP FUNCTION deal_daily_counts_track()")
        op.execute("DROP FUNCTION deal_daily_counts_add(bigint, date, varchar, bigint, bigint)")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER deals_daily_counts_{name}")
    op.drop_table("deal_daily_counts")
