"""Contacts, deals, tasks and the deal activity timeline.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Exact money: NUMERIC on PostgreSQL, integer minor units on SQLite (see app.db.types.Money).
MONEY = sa.Numeric(14, 2).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("owner_id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_contacts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_contacts_owner_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("organization_id", "id", name=op.f("uq_contacts_organization_id_id")),
    )
    op.create_index(
        "ix_contacts_org_created", "contacts", ["organization_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_contacts_org_name", "contacts", ["organization_id", "name", "id"], unique=False
    )
    op.create_index(
        "ix_contacts_org_owner",
        "contacts",
        ["organization_id", "owner_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "deals",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("contact_id", ID, nullable=False),
        sa.Column("owner_id", ID, nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_deals_amount_not_negative")),
        sa.ForeignKeyConstraint(
            ["organization_id", "contact_id"],
            ["contacts.organization_id", "contacts.id"],
            name="fk_deals_contact_same_org",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_deals_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_deals_owner_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deals")),
        sa.UniqueConstraint("organization_id", "id", name=op.f("uq_deals_organization_id_id")),
    )
    op.create_index(
        "ix_deals_org_amount", "deals", ["organization_id", "amount", "id"], unique=False
    )
    op.create_index(
        "ix_deals_org_contact", "deals", ["organization_id", "contact_id"], unique=False
    )
    op.create_index(
        "ix_deals_org_created", "deals", ["organization_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_deals_org_owner",
        "deals",
        ["organization_id", "owner_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_deals_org_stage_created",
        "deals",
        ["organization_id", "stage", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_deals_org_status_amount",
        "deals",
        ["organization_id", "status", "amount", "id"],
        unique=False,
    )
    op.create_index("ix_deals_org_title", "deals", ["organization_id", "title", "id"], unique=False)
    op.create_index(
        "ix_deals_org_updated", "deals", ["organization_id", "updated_at", "id"], unique=False
    )
    op.create_table(
        "activities",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("deal_id", ID, nullable=False),
        sa.Column("author_id", ID, nullable=True),
        sa.Column(
            "type",
            sa.Enum(
                "comment",
                "status_changed",
                "stage_changed",
                "task_created",
                "system",
                name="activity_type",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_activities_author_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "deal_id"],
            ["deals.organization_id", "deals.id"],
            name="fk_activities_deal_same_org",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_activities_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activities")),
    )
    op.create_index(
        "ix_activities_org_deal_created",
        "activities",
        ["organization_id", "deal_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "tasks",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("deal_id", ID, nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("is_done", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id", "deal_id"],
            ["deals.organization_id", "deals.id"],
            name="fk_tasks_deal_same_org",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_tasks_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(
        "ix_tasks_org_deal_due",
        "tasks",
        ["organization_id", "deal_id", "due_date", "id"],
        unique=False,
    )
    op.create_index(
        "ix_tasks_org_due", "tasks", ["organization_id", "due_date", "id"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        # Trigram index: substring search on contacts without a sequential scan.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_contacts_search_trgm",
            "contacts",
            ["search_text"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        )


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("activities")
    op.drop_table("deals")
    op.drop_table("contacts")
