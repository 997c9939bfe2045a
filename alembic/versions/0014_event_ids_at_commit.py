"""Event ids drawn at commit: on PostgreSQL each event is numbered inside COMMIT, under its
organization's lock, by a deferred constraint trigger (see `app.services.events`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The two-key advisory lock of an organization's events: "EVNT", then the organization id
# folded into an int4 (two organizations that share a key only wait for each other).
NUMBER_AT_COMMIT = """
CREATE FUNCTION events_number_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1163284052, (NEW.organization_id % 2147483647)::integer);
    UPDATE events SET id = nextval('events_id_seq') WHERE id = NEW.id;
    RETURN NULL;
END
$$
"""
# Only rows inserted with a placeholder (a negative id: `app.repositories.events.append`); a row
# inserted with its id (a restored dump, a bulk load) keeps it.
TRIGGER = """
CREATE CONSTRAINT TRIGGER events_number_at_commit AFTER INSERT ON events
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.id < 0)
EXECUTE FUNCTION events_number_at_commit()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite serialises whole write transactions: ids are in commit order already
    op.execute(NUMBER_AT_COMMIT)
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER events_number_at_commit ON events")
    op.execute("DROP FUNCTION events_number_at_commit()")
