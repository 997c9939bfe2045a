"""Pipelines (contract section 17): `pipelines`, `pipeline_stages`, `deals.pipeline_id`, and
`deal_stats` per pipeline.

Every organization gets a default pipeline, "Sales pipeline", whose stages are the four of
section 6 (`qualification` 10 %, `proposal` 40 %, `negotiation` 70 %, `closed` 100 %); every
existing deal, live or in the trash, is put in it, and the running totals (`deal_stats`) are
those of that pipeline. `deals.stage` becomes a plain string (a stage key of the deal's
pipeline): the enum's CHECK goes, and two foreign keys take its place, one keeping the pipeline
in the deal's organization, one keeping the stage in the pipeline.

SQLite cannot drop a CHECK or add a table constraint without rebuilding the table, and
rebuilding `deals` means dropping it, which with foreign keys on deletes every task and
activity of every deal (ON DELETE CASCADE) first. So on SQLite the tables are rebuilt with
foreign keys off, in a transaction of their own (SQLite ignores `PRAGMA foreign_keys` inside a
transaction: the migration's is committed first), checked by `PRAGMA foreign_key_check`
before it commits; the indexes and triggers of `deals` (the daily counts of migrations 0006
and 0011) are recreated from their own definitions.

Downgrading puts every deal back on one of the four stages: a key of those four stays, any
other becomes the one at its stage's position (the last for position 3 and after); the
running totals are merged the same way (their versions added up, so the data version stays).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from alembic import op
from app.db.types import UTCDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KEY = sa.String(length=50)
OLD_STAGE = sa.String(length=13)
STAGES = ("qualification", "proposal", "negotiation", "closed")
DEFAULT_NAME = "Sales pipeline"
# (key, name, probability) in position order; the README says the same.
DEFAULT_STAGES = (
    ("qualification", "Qualification", 10),
    ("proposal", "Proposal", 40),
    ("negotiation", "Negotiation", 70),
    ("closed", "Closed", 100),
)
STAT_KEY = ("organization_id", "currency", "status", "stage", "slot")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


@contextmanager
def _foreign_keys_off() -> Iterator[None]:
    """SQLite: the block in a transaction of its own with foreign keys off (see the module);
    elsewhere, the block as it is."""
    if not _sqlite():
        yield
        return
    bind = op.get_bind()
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    bind.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the migration: {broken[:10]}")
        bind.exec_driver_sql("COMMIT")
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
        bind.exec_driver_sql("BEGIN IMMEDIATE")  # the migration's own transaction goes on


@contextmanager
def _deals_rebuilt() -> Iterator[None]:
    """SQLite: the indexes and triggers of `deals` dropped before the block (which rebuilds the
    table) and created again after it, from their own definitions."""
    if not _sqlite():
        yield
        return
    bind = op.get_bind()
    objects = bind.exec_driver_sql(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'deals' "
        "AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name"
    ).fetchall()
    for kind, name, _ in objects:
        op.execute(f"DROP {kind.upper()} {name}")
    yield
    for _, _, sql in objects:
        op.execute(sql)


def _batch_deals() -> Any:
    # SQLite reflects the name of no column-level constraint: the company's foreign key
    # (migration 0015) is given with its name, or the rebuilt table would have it unnamed.
    company = sa.Column(
        "company_id", ID, sa.ForeignKey("companies.id", name="fk_deals_company_id_companies")
    )
    return op.batch_alter_table("deals", recreate="auto", reflect_args=[company])


def upgrade() -> None:
    with _foreign_keys_off():
        _create_tables()
        _default_pipelines()
        op.add_column(
            "organizations",
            sa.Column("pipelines_version", sa.BigInteger(), server_default="0", nullable=False),
        )
        op.add_column("deals", sa.Column("pipeline_id", ID, nullable=True))
        op.execute(
            "UPDATE deals SET pipeline_id = (SELECT p.id FROM pipelines p "
            "WHERE p.organization_id = deals.organization_id AND p.is_default)"
        )
        with _deals_rebuilt(), _batch_deals() as batch:
            batch.alter_column("pipeline_id", existing_type=ID, nullable=False)
            batch.drop_constraint(op.f("ck_deals_deal_stage"), type_="check")
            batch.alter_column("stage", existing_type=OLD_STAGE, type_=KEY, existing_nullable=False)
            batch.create_foreign_key(
                "fk_deals_pipeline_same_org",
                "pipelines",
                ["organization_id", "pipeline_id"],
                ["organization_id", "id"],
                ondelete="RESTRICT",
            )
            batch.create_foreign_key(
                "fk_deals_stage_in_pipeline",
                "pipeline_stages",
                ["pipeline_id", "stage"],
                ["pipeline_id", "key"],
                ondelete="RESTRICT",
            )
        op.create_index(
            "ix_deals_org_pipeline_stage", "deals", ["organization_id", "pipeline_id", "stage"]
        )
        op.add_column("deal_stats", sa.Column("pipeline_id", ID, nullable=True))
        op.execute(
            "UPDATE deal_stats SET pipeline_id = (SELECT p.id FROM pipelines p "
            "WHERE p.organization_id = deal_stats.organization_id AND p.is_default)"
        )
        with op.batch_alter_table("deal_stats", recreate="auto") as batch:
            batch.alter_column("pipeline_id", existing_type=ID, nullable=False)
            batch.drop_constraint(op.f("ck_deal_stats_deal_stage"), type_="check")
            batch.alter_column("stage", existing_type=OLD_STAGE, type_=KEY, existing_nullable=False)
            batch.drop_constraint(op.f("pk_deal_stats"), type_="primary")
            batch.create_primary_key(
                op.f("pk_deal_stats"),
                ["organization_id", "pipeline_id", "currency", "status", "stage", "slot"],
            )


def _create_tables() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_pipelines_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("organization_id", "id", name=op.f("uq_pipelines_organization_id_id")),
    )
    # Exactly one default per organization: the database allows no second one.
    op.create_index(
        "uq_pipelines_one_default",
        "pipelines",
        ["organization_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
        sqlite_where=sa.text("is_default"),
    )
    op.create_table(
        "pipeline_stages",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("pipeline_id", ID, nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("probability", sa.SmallInteger(), nullable=False),
        sa.CheckConstraint(
            "probability >= 0 AND probability <= 100",
            name=op.f("ck_pipeline_stages_probability_percent"),
        ),
        sa.CheckConstraint("position >= 0", name=op.f("ck_pipeline_stages_position_not_negative")),
        sa.ForeignKeyConstraint(
            ["organization_id", "pipeline_id"],
            ["pipelines.organization_id", "pipelines.id"],
            name="fk_pipeline_stages_pipeline_same_org",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_stages")),
        sa.UniqueConstraint("pipeline_id", "key", name=op.f("uq_pipeline_stages_pipeline_id_key")),
    )
    op.create_index(
        "ix_pipeline_stages_org_pipeline",
        "pipeline_stages",
        ["organization_id", "pipeline_id", "position"],
    )


def _default_pipelines() -> None:
    """Every organization's default pipeline and its four stages."""
    bind = op.get_bind()
    now = datetime.now(UTC)
    pipelines = sa.table(
        "pipelines",
        sa.column("organization_id", ID),
        sa.column("name", sa.String()),
        sa.column("is_default", sa.Boolean()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    organizations = [row[0] for row in bind.execute(sa.text("SELECT id FROM organizations"))]
    if not organizations:
        return
    op.bulk_insert(
        pipelines,
        [
            {
                "organization_id": organization_id,
                "name": DEFAULT_NAME,
                "is_default": True,
                "created_at": now,
                "updated_at": now,
            }
            for organization_id in organizations
        ],
    )
    stages = sa.table(
        "pipeline_stages",
        sa.column("organization_id", ID),
        sa.column("pipeline_id", ID),
        sa.column("key", KEY),
        sa.column("name", sa.String()),
        sa.column("position", sa.SmallInteger()),
        sa.column("probability", sa.SmallInteger()),
    )
    created = bind.execute(sa.text("SELECT organization_id, id FROM pipelines")).all()
    op.bulk_insert(
        stages,
        [
            {
                "organization_id": organization_id,
                "pipeline_id": pipeline_id,
                "key": key,
                "name": name,
                "position": position,
                "probability": probability,
            }
            for organization_id, pipeline_id in created
            for position, (key, name, probability) in enumerate(DEFAULT_STAGES)
        ],
    )


# A stage as the older schema knows it: one of the four keys stays; any other, the one at
# its stage's position in its pipeline (the last from position 3 on, and for a pipeline
# already deleted, whose running totals are all zero).
def _old_stage(table: str) -> str:
    return (  # constants only
        f"CASE WHEN {table}.stage IN ('qualification', 'proposal', 'negotiation', 'closed') "  # noqa: S608
        f"THEN {table}.stage ELSE coalesce((SELECT CASE s.position WHEN 0 THEN 'qualification' "
        "WHEN 1 THEN 'proposal' WHEN 2 THEN 'negotiation' ELSE 'closed' END "
        f"FROM pipeline_stages s WHERE s.pipeline_id = {table}.pipeline_id "
        f"AND s.key = {table}.stage), 'closed') END"
    )


def downgrade() -> None:
    with _foreign_keys_off():
        # The running totals first (they read the stages), merged over pipelines.
        op.execute(f"UPDATE deal_stats SET stage = {_old_stage('deal_stats')}")  # noqa: S608
        op.rename_table("deal_stats", "deal_stats_per_pipeline")
        # PostgreSQL names the primary key's index in the schema, where the old table still
        # has it: the new one is renamed once the old one is gone. SQLite has no such names.
        temporary = "" if _sqlite() else "_old"
        op.create_table(
            "deal_stats",
            sa.Column("organization_id", ID, nullable=False),
            sa.Column("currency", sa.String(length=3), nullable=False),
            sa.Column(
                "status",
                sa.Enum(
                    "new",
                    "in_progress",
                    "won",
                    "lost",
                    name="deal_status",
                    native_enum=False,
                    create_constraint=True,
                ),
                nullable=False,
            ),
            sa.Column(
                "stage",
                sa.Enum(*STAGES, name="deal_stage", native_enum=False, create_constraint=True),
                nullable=False,
            ),
            sa.Column("slot", sa.SmallInteger(), server_default="0", nullable=False),
            sa.Column("deal_count", sa.BigInteger(), nullable=False),
            sa.Column(
                "amount_sum",
                sa.Numeric(24, 2).with_variant(sa.BigInteger(), "sqlite"),
                nullable=False,
            ),
            sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
            sa.ForeignKeyConstraint(
                ["organization_id"],
                ["organizations.id"],
                name=op.f(f"fk_deal_stats_organization_id_organizations{temporary}"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint(*STAT_KEY, name=op.f(f"pk_deal_stats{temporary}")),
        )
        key = ", ".join(STAT_KEY)
        op.execute(
            f"INSERT INTO deal_stats ({key}, deal_count, amount_sum, version) "  # noqa: S608
            f"SELECT {key}, sum(deal_count), sum(amount_sum), sum(version) "
            f"FROM deal_stats_per_pipeline GROUP BY {key}"
        )
        op.drop_table("deal_stats_per_pipeline")
        if temporary:
            op.execute(
                "ALTER TABLE deal_stats RENAME CONSTRAINT pk_deal_stats_old TO pk_deal_stats"
            )
            op.execute(
                "ALTER TABLE deal_stats RENAME CONSTRAINT "
                "fk_deal_stats_organization_id_organizations_old "
                "TO fk_deal_stats_organization_id_organizations"
            )

        if not _sqlite():
            # First: the stages written below are not all stages of the deal's pipeline. (On
            # SQLite foreign keys are off here, and the rebuild below drops it.)
            op.drop_constraint("fk_deals_stage_in_pipeline", "deals", type_="foreignkey")
        op.execute(f"UPDATE deals SET stage = {_old_stage('deals')}")  # noqa: S608
        op.drop_index("ix_deals_org_pipeline_stage", table_name="deals")
        with _deals_rebuilt():
            with _batch_deals() as batch:
                if _sqlite():
                    batch.drop_constraint("fk_deals_stage_in_pipeline", type_="foreignkey")
                batch.drop_constraint("fk_deals_pipeline_same_org", type_="foreignkey")
                batch.drop_column("pipeline_id")
                batch.alter_column(
                    "stage", existing_type=KEY, type_=OLD_STAGE, existing_nullable=False
                )
                batch.create_check_constraint(
                    op.f("ck_deals_deal_stage"), sa.column("stage").in_(STAGES)
                )
            if _sqlite():
                _company_column_as_0015_made_it()
        op.drop_column("organizations", "pipelines_version")
        op.drop_index("ix_pipeline_stages_org_pipeline", table_name="pipeline_stages")
        op.drop_table("pipeline_stages")
        op.drop_index("uq_pipelines_one_default", table_name="pipelines")
        op.drop_table("pipelines")


def _company_column_as_0015_made_it() -> None:
    """SQLite: `deals.company_id` with a column-level foreign key again, as migration 0015
    added it (the rebuilt table has it as a table constraint, which would keep 0015's
    downgrade from dropping the column)."""
    op.execute(
        "CREATE TEMP TABLE deal_companies AS "
        "SELECT id, company_id FROM deals WHERE company_id IS NOT NULL"
    )
    with _batch_deals() as batch:
        batch.drop_constraint("fk_deals_company_id_companies", type_="foreignkey")
    op.drop_column("deals", "company_id")
    op.execute(
        "ALTER TABLE deals ADD COLUMN company_id INTEGER "
        "CONSTRAINT fk_deals_company_id_companies REFERENCES companies (id)"
    )
    op.execute(
        "UPDATE deals SET company_id = (SELECT c.company_id FROM deal_companies c "
        "WHERE c.id = deals.id) WHERE id IN (SELECT id FROM deal_companies)"
    )
    op.execute("DROP TABLE deal_companies")
