"""Match keys of contacts (normalised email and phone) for duplicates, and the
`contact_merged` timeline entry.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from app.core.contact_keys import match_keys

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000
_TYPES_BEFORE = ("comment", "status_changed", "stage_changed", "task_created", "system")
_TYPES_AFTER = (*_TYPES_BEFORE, "contact_merged")


def upgrade() -> None:
    op.add_column("contacts", sa.Column("email_key", sa.Text(), nullable=True))
    op.add_column("contacts", sa.Column("phone_key", sa.String(length=50), nullable=True))
    _backfill_keys()
    op.create_index("ix_contacts_org_email_key", "contacts", ["organization_id", "email_key", "id"])
    op.create_index("ix_contacts_org_phone_key", "contacts", ["organization_id", "phone_key", "id"])
    _activity_types(_TYPES_AFTER)


def downgrade() -> None:
    # The older schema has no `contact_merged`: such entries stay, as `system` ones.
    op.execute("UPDATE activities SET type = 'system' WHERE type = 'contact_merged'")
    _activity_types(_TYPES_BEFORE)
    op.drop_index("ix_contacts_org_phone_key", table_name="contacts")
    op.drop_index("ix_contacts_org_email_key", table_name="contacts")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 too): a batch copy of `contacts` would
    # drop the table deals refer to.
    op.drop_column("contacts", "phone_key")
    op.drop_column("contacts", "email_key")


def _backfill_keys() -> None:
    """The keys of existing contacts, in batches by id (with today's DEFAULT_PHONE_REGION)."""
    connection = op.get_bind()
    contacts = sa.table(
        "contacts",
        sa.column("id", sa.BigInteger()),
        sa.column("email", sa.String()),
        sa.column("phone", sa.String()),
        sa.column("email_key", sa.Text()),
        sa.column("phone_key", sa.String()),
    )
    update = (
        sa.update(contacts)
        .where(contacts.c.id == sa.bindparam("contact_id"))
        .values(email_key=sa.bindparam("new_email_key"), phone_key=sa.bindparam("new_phone_key"))
    )
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(contacts.c.id, contacts.c.email, contacts.c.phone)
            .where(
                contacts.c.id > last_id,
                sa.or_(contacts.c.email.isnot(None), contacts.c.phone.isnot(None)),
            )
            .order_by(contacts.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        keyed = []
        for row in rows:
            email_key, phone_key = match_keys(row.email, row.phone)
            keyed.append(
                {"contact_id": row.id, "new_email_key": email_key, "new_phone_key": phone_key}
            )
        connection.execute(update, keyed)
        last_id = rows[-1].id


def _activity_types(types: Sequence[str]) -> None:
    with op.batch_alter_table("activities") as batch:
        batch.drop_constraint(op.f("ck_activities_activity_type"), type_="check")
        batch.create_check_constraint(
            op.f("ck_activities_activity_type"), sa.column("type").in_(types)
        )
