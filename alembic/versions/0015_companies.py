"""Companies (contract section 17), and `company_id` on contacts and deals.

`contacts.company_id` and `deals.company_id` are nullable, with a plain foreign key to
`companies.id` (no ON DELETE action: a company something still refers to cannot be
deleted). SQLite can add a column carrying a foreign key to an
existing table (`ALTER TABLE ... ADD COLUMN ... REFERENCES`), but not a table constraint such
as the (organization_id, id) keys deals have for their contact, short of rebuilding the table,
which for `contacts` and `deals` would cascade into the tables that refer to them. That the
company is one of the record's organization is the service's check.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
REFERRING = ("contacts", "deals")


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("owner_id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("address", sa.String(length=500), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_companies_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_companies_owner_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_companies")),
    )
    op.create_index(
        "ix_companies_org_created", "companies", ["organization_id", "created_at", "id"]
    )
    op.create_index("ix_companies_org_name", "companies", ["organization_id", "name", "id"])
    op.create_index(
        "ix_companies_org_owner", "companies", ["organization_id", "owner_id", "created_at", "id"]
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # Substring search without a sequential scan, as on contacts (pg_trgm: migration 0002).
        op.create_index(
            "ix_companies_search_trgm",
            "companies",
            ["search_text"],
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        )
    for table in REFERRING:
        name = f"fk_{table}_company_id_companies"
        if postgresql:
            op.add_column(table, sa.Column("company_id", ID, nullable=True))
            op.create_foreign_key(name, table, "companies", ["company_id"], ["id"])
        else:
            # A column-level foreign key: the one kind SQLite adds without a table rebuild.
            op.execute(
                f"ALTER TABLE {table} ADD COLUMN company_id INTEGER "
                f"CONSTRAINT {name} REFERENCES companies (id)"
            )
        op.create_index(f"ix_{table}_company", table, ["company_id", "created_at", "id"])


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in REFERRING:
        op.drop_index(f"ix_{table}_company", table_name=table)
        if postgresql:
            op.drop_constraint(f"fk_{table}_company_id_companies", table, type_="foreignkey")
        # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 too), not a batch copy of the
        # table (see migration 0012).
        op.drop_column(table, "company_id")
    op.drop_table("companies")
