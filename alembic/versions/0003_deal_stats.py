"""Running deal totals for analytics, and an index for "created in the last N days".

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Exact totals: NUMERIC on PostgreSQL, integer minor units on SQLite (see app.db.types.Money).
MONEY_TOTAL = sa.Numeric(24, 2).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
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
            sa.Enum(
                "qualification",
                "proposal",
                "negotiation",
                "closed",
                name="deal_stage",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("slot", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("deal_count", sa.BigInteger(), nullable=False),
        sa.Column("amount_sum", MONEY_TOTAL, nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_deal_stats_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "currency", "status", "stage", "slot", name=op.f("pk_deal_stats")
        ),
    )
    op.create_index(
        "ix_deals_org_currency_created",
        "deals",
        ["organization_id", "currency", "created_at"],
        unique=False,
    )
    # Backfill from the deals that already exist.
    op.execute(
        "INSERT INTO deal_stats (organization_id, currency, status, stage, deal_count, amount_sum) "
        "SELECT organization_id, currency, status, stage, count(*), sum(amount) "
        "FROM deals GROUP BY organization_id, currency, status, stage"
    )


def downgrade() -> None:
    op.drop_index("ix_deals_org_currency_created", table_name="deals")
    op.drop_table("deal_stats")
