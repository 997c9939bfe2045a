"""Custom fields (contract section 17): `custom_field_definitions`, and a `custom_fields` JSON
column on contacts, companies and deals.

The values of every custom field of a record live in that one column (JSONB on PostgreSQL,
JSON text on SQLite), NOT NULL with `{}` for none, so defining a field needs no migration.
Adding a column with a constant default rewrites no table on PostgreSQL (11+), nor on SQLite.

The indexes that make a filter on one custom field fast on PostgreSQL are not declared here:
the worker makes one per (table, key) once a key is defined and drops it when no organization
uses that key any more (`app.jobs.custom_field_indexes`), and `alembic/env.py` leaves them out
of the comparison with the models.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
CARRYING = ("contacts", "companies", "deals")
ENTITIES = ("contact", "company", "deal")
TYPES = ("text", "number", "money", "date", "boolean", "select", "multiselect")


def upgrade() -> None:
    op.create_table(
        "custom_field_definitions",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column(
            "entity",
            sa.Enum(
                *ENTITIES, name="custom_field_entity", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column(
            "type",
            sa.Enum(*TYPES, name="custom_field_type", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("options", JSON_DOCUMENT, nullable=True),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_custom_field_definitions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_field_definitions")),
        sa.UniqueConstraint(
            "organization_id",
            "entity",
            "key",
            name=op.f("uq_custom_field_definitions_organization_id_entity_key"),
        ),
    )
    for table in CARRYING:
        op.add_column(
            table,
            sa.Column(
                "custom_fields", JSON_DOCUMENT, nullable=False, server_default=sa.text("'{}'")
            ),
        )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 too), as in migration 0015. On
    # PostgreSQL the per-key indexes the service made (`ix_<table>_cf_<key>`) go with it.
    for table in CARRYING:
        op.drop_column(table, "custom_fields")
    op.drop_table("custom_field_definitions")
