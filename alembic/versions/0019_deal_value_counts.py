"""Live deals per value of each select and boolean deal custom field: `deal_value_counts`.

The exact total of `GET /deals?cf.<key>=<value>` (that filter alone) becomes a sum of at most
16 rows, instead of a count that visits every deal holding the value. The services keep the
counts with every deal write (`app.services.read_models`), like `deal_stats`; this migration
fills them from the live deals, one row per value (slot 0).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# A deal's value of definition `f`'s key as text: an option as it is, a boolean true or false
# (`app.repositories.custom_fields.value_text`).
_VALUE = {
    "postgresql": "d.custom_fields ->> f.key",
    "sqlite": (
        "CASE WHEN json_type(d.custom_fields, '$.' || f.key) IN ('true', 'false') "
        "THEN json_type(d.custom_fields, '$.' || f.key) "
        "ELSE json_extract(d.custom_fields, '$.' || f.key) END"
    ),
}


def upgrade() -> None:
    op.create_table(
        "deal_value_counts",
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("deal_count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_deal_value_counts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "key", "value", "slot", name=op.f("pk_deal_value_counts")
        ),
    )
    value = _VALUE[op.get_bind().dialect.name]
    op.execute(  # constants only
        "INSERT INTO deal_value_counts (organization_id, key, value, slot, deal_count) "  # noqa: S608
        f"SELECT d.organization_id, f.key, {value}, 0, count(*) "
        "FROM custom_field_definitions f JOIN deals d ON d.organization_id = f.organization_id "
        "WHERE f.entity = 'deal' AND f.type IN ('select', 'boolean') "
        f"AND d.deleted_at IS NULL AND {value} IS NOT NULL "
        "GROUP BY d.organization_id, f.key, 3"
    )


def downgrade() -> None:
    op.drop_table("deal_value_counts")
