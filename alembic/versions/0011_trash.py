"""The trash: `deleted_at` on contacts, deals and tasks.

A record whose `deleted_at` is set is in the trash (`app.repositories.base.live`). The hot
list and count indexes become partial (`WHERE deleted_at IS NULL`, on PostgreSQL and SQLite):
every list query carries that condition, so they serve it as before, counts stay index-only
scans on PostgreSQL, and trashed rows do not weigh on them. Small partial indexes over the
trashed rows serve `GET /trash` and the purge.

`deal_daily_counts` (migration 0006) counts live deals only from here on: its triggers also
follow `deleted_at` (trashing a deal counts it out of its creation day, restoring counts it
back in, purging a trashed deal changes nothing). `deal_stats` is kept by the services
(`app.services.read_models`), which treat trash and restore as a delete and a create.

Downgrading purges the trash first: the old schema has no place for it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRASHABLE = ("contacts", "deals", "tasks")
LIVE = sa.text("deleted_at IS NULL")
TRASHED = sa.text("deleted_at IS NOT NULL")

# (name, table, columns) of the list and count indexes that become partial.
LIST_INDEXES = [
    ("ix_contacts_org_created", "contacts", ["organization_id", "created_at", "id"]),
    ("ix_contacts_org_name", "contacts", ["organization_id", "name", "id"]),
    ("ix_contacts_org_owner", "contacts", ["organization_id", "owner_id", "created_at", "id"]),
    ("ix_deals_org_created", "deals", ["organization_id", "created_at", "id"]),
    ("ix_deals_org_currency_created", "deals", ["organization_id", "currency", "created_at"]),
    ("ix_deals_org_updated", "deals", ["organization_id", "updated_at", "id"]),
    ("ix_deals_org_amount", "deals", ["organization_id", "amount", "id"]),
    ("ix_deals_org_title", "deals", ["organization_id", "title", "id"]),
    ("ix_deals_org_status_amount", "deals", ["organization_id", "status", "amount", "id"]),
    ("ix_deals_org_stage_created", "deals", ["organization_id", "stage", "created_at", "id"]),
    ("ix_deals_org_owner", "deals", ["organization_id", "owner_id", "created_at", "id"]),
    ("ix_tasks_org_due", "tasks", ["organization_id", "due_date", "id"]),
]

# --- deal_daily_counts: live deals only ------------------------------------------------------

_PG_TRACK_LIVE = """
CREATE OR REPLACE FUNCTION deal_daily_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_day date;
    new_day date;
    old_live boolean;
    new_live boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.deleted_at IS NULL THEN
            PERFORM deal_daily_counts_add(
                NEW.organization_id, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.currency,
                NEW.id, 1);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        -- A trashed deal was counted out when it was trashed. Not when the deal goes with its
        -- organization (ON DELETE CASCADE): the counts go too, and a row for a deleted
        -- organization would break its foreign key.
        IF OLD.deleted_at IS NULL
                AND EXISTS (SELECT 1 FROM organizations WHERE id = OLD.organization_id) THEN
            PERFORM deal_daily_counts_add(
                OLD.organization_id, (OLD.created_at AT TIME ZONE 'UTC')::date,
                OLD.currency, OLD.id, -1);
        END IF;
    ELSE
        old_live := OLD.deleted_at IS NULL;
        new_live := NEW.deleted_at IS NULL;
        old_day := (OLD.created_at AT TIME ZONE 'UTC')::date;
        new_day := (NEW.created_at AT TIME ZONE 'UTC')::date;
        IF NOT old_live AND NOT new_live THEN
            RETURN NULL;
        ELSIF old_live AND NOT new_live THEN  -- to the trash
            PERFORM deal_daily_counts_add(
                OLD.organization_id, old_day, OLD.currency, OLD.id, -1);
        ELSIF new_live AND NOT old_live THEN  -- restored
            PERFORM deal_daily_counts_add(
                NEW.organization_id, new_day, NEW.currency, NEW.id, 1);
        ELSIF (OLD.organization_id, old_day, OLD.currency)
                = (NEW.organization_id, new_day, NEW.currency) THEN
            RETURN NULL;
        -- Two rows: lock them in key order, as every writer does, so that two deals
        -- moving in opposite directions cannot deadlock.
        ELSIF (NEW.organization_id, new_day, NEW.currency)
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
"""

# Migration 0006's function, for the downgrade.
_PG_TRACK_ALL = """
CREATE OR REPLACE FUNCTION deal_daily_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_day date;
    new_day date;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM deal_daily_counts_add(
            NEW.organization_id, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.currency,
            NEW.id, 1);
    ELSIF TG_OP = 'DELETE' THEN
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
"""


def _pg_update_trigger(columns: str) -> list[str]:
    return [
        "DROP TRIGGER deals_daily_counts_update ON deals",
        f"""
        CREATE TRIGGER deals_daily_counts_update AFTER UPDATE OF {columns} ON deals
        FOR EACH ROW EXECUTE FUNCTION deal_daily_counts_track()
        """,
    ]


SLOTS = 16  # app.models.deal_stats.STAT_SLOTS


def _sqlite_add(row: str, delta: int) -> str:
    return (  # constants only
        "INSERT INTO deal_daily_counts (organization_id, day, currency, slot, deal_count) "  # noqa: S608
        f"VALUES ({row}.organization_id, date({row}.created_at), {row}.currency, "
        f"{row}.id % {SLOTS}, {delta}) "
        "ON CONFLICT (organization_id, day, currency, slot) "
        "DO UPDATE SET deal_count = deal_count + excluded.deal_count;"
    )


_ORGANIZATION_EXISTS = "EXISTS (SELECT 1 FROM organizations WHERE id = OLD.organization_id)"
_KEY_CHANGED = """(OLD.organization_id IS NOT NEW.organization_id
        OR date(OLD.created_at) IS NOT date(NEW.created_at)
        OR OLD.currency IS NOT NEW.currency)"""

_SQLITE_LIVE = [
    f"""
    CREATE TRIGGER deals_daily_counts_insert AFTER INSERT ON deals
    WHEN NEW.deleted_at IS NULL
    BEGIN {_sqlite_add("NEW", 1)} END
    """,
    f"""
    CREATE TRIGGER deals_daily_counts_delete AFTER DELETE ON deals
    WHEN OLD.deleted_at IS NULL AND {_ORGANIZATION_EXISTS}
    BEGIN {_sqlite_add("OLD", -1)} END
    """,
    f"""
    CREATE TRIGGER deals_daily_counts_update
    AFTER UPDATE OF organization_id, created_at, currency, deleted_at ON deals
    WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NULL AND {_KEY_CHANGED}
    BEGIN {_sqlite_add("OLD", -1)} {_sqlite_add("NEW", 1)} END
    """,
    f"""
    CREATE TRIGGER deals_daily_counts_trash AFTER UPDATE OF deleted_at ON deals
    WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL
    BEGIN {_sqlite_add("OLD", -1)} END
    """,
    f"""
    CREATE TRIGGER deals_daily_counts_restore AFTER UPDATE OF deleted_at ON deals
    WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL
    BEGIN {_sqlite_add("NEW", 1)} END
    """,
]

# Migration 0006's triggers, for the downgrade.
_SQLITE_ALL = [
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
    WHEN {_KEY_CHANGED}
    BEGIN {_sqlite_add("OLD", -1)} {_sqlite_add("NEW", 1)} END
    """,
]


def _recreate_list_indexes(where: sa.TextClause | None) -> None:
    for name, table, columns in LIST_INDEXES:
        op.drop_index(name, table_name=table)
        if where is None:
            op.create_index(name, table, columns, unique=False)
        else:
            op.create_index(
                name, table, columns, unique=False, postgresql_where=where, sqlite_where=where
            )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in TRASHABLE:
        op.add_column(table, sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    _recreate_list_indexes(LIVE)
    for table in TRASHABLE:
        op.create_index(
            f"ix_{table}_trash",
            table,
            ["organization_id", "deleted_at", "id"],
            unique=False,
            postgresql_where=TRASHED,
            sqlite_where=TRASHED,
        )
    if dialect == "postgresql":
        op.execute(_PG_TRACK_LIVE)
        for statement in _pg_update_trigger("organization_id, created_at, currency, deleted_at"):
            op.execute(statement)
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER deals_daily_counts_{name}")
        for statement in _SQLITE_LIVE:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    # Purge the trash (trashed deals are counted nowhere: deleting them changes no count).
    # Tasks and timelines of trashed deals go with them (ON DELETE CASCADE).
    op.execute("DELETE FROM tasks WHERE deleted_at IS NOT NULL")
    op.execute("DELETE FROM deals WHERE deleted_at IS NOT NULL")
    op.execute("DELETE FROM contacts WHERE deleted_at IS NOT NULL")
    if dialect == "postgresql":
        for statement in _pg_update_trigger("organization_id, created_at, currency"):
            op.execute(statement)
        op.execute(_PG_TRACK_ALL)
    else:
        for name in ("insert", "delete", "update", "trash", "restore"):
            op.execute(f"DROP TRIGGER deals_daily_counts_{name}")
        for statement in _SQLITE_ALL:
            op.execute(statement)
    for table in TRASHABLE:
        op.drop_index(f"ix_{table}_trash", table_name=table)
    _recreate_list_indexes(None)
    for table in TRASHABLE:
        op.drop_column(table, "deleted_at")
