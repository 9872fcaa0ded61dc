"""Deadlines and notifications (CONTRACT §10): overdue markers, hooks, the outbox.

* ``workflow_overdue``: one row per (instance, state, entry into the state) for which an
  ``overdue`` event was recorded; its UNIQUE key is what makes ``workflow tick`` idempotent
  when several hosts run it at once (the loser's transaction collides and re-reads).
* ``workflow_hooks``: receivers (a webhook URL or ``mailto:``), optionally for one program
  and/or one trigger; removing one sets ``removed_at`` (its deliveries stay listable).
* ``workflow_outbox``: one row per (hook, event) to deliver. An ``AFTER INSERT`` trigger on
  ``workflow_events`` writes it, so it is in the event's own transaction by construction:
  never without its event, never lost with it, and no Python write path changes.

Self-contained on purpose (see 0004).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OVERDUE, HOOKS, OUTBOX = "workflow_overdue", "workflow_hooks", "workflow_outbox"
EVENTS = "workflow_events"
TRIGGER = "workflow_events_outbox"

#: The outbox rows of one new event: one per live hook whose program and trigger match.
_FILL = (
    f"INSERT INTO {OUTBOX} (hook_id, event_id, status, attempts, next_at, created_at) "
    f"SELECT h.id, NEW.id, 'pending', 0, NEW.at, NEW.at FROM {HOOKS} h "
    "WHERE h.removed_at IS NULL AND (h.trigger_name IS NULL OR h.trigger_name = NEW.trigger) "
    "AND (h.program IS NULL OR h.program = "
    "(SELECT i.program FROM workflow_instances i WHERE i.id = NEW.instance_id))"
)


def _big() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    tables = set(sa.inspect(conn).get_table_names())
    if OVERDUE not in tables:
        op.create_table(
            OVERDUE,
            sa.Column("id", _big(), primary_key=True),
            sa.Column("instance_id", sa.BigInteger, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("entered_seq", sa.Integer, nullable=False),
            sa.Column("event_seq", sa.Integer, nullable=False),
            sa.Column("due_at", sa.String(32), nullable=False),
            sa.Column("recorded_at", sa.String(32), nullable=False),
            sa.UniqueConstraint("instance_id", "state", "entered_seq", name="uq_overdue_entry"),
        )
    if HOOKS not in tables:
        op.create_table(
            HOOKS,
            sa.Column("id", _big(), primary_key=True),
            sa.Column("url", sa.Text, nullable=False),
            sa.Column("program", sa.String(64)),
            sa.Column("trigger_name", sa.String(64)),
            sa.Column("secret", sa.Text),
            sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("removed_at", sa.String(32)),
        )
    if OUTBOX not in tables:
        op.create_table(
            OUTBOX,
            sa.Column("id", _big(), primary_key=True),
            sa.Column("hook_id", sa.BigInteger, nullable=False),
            sa.Column("event_id", sa.BigInteger, nullable=False),
            sa.Column("status", sa.String(9), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_at", sa.String(32), nullable=False),
            sa.Column("claimed_by", sa.Text),
            sa.Column("claimed_until", sa.String(32)),
            sa.Column("last_error", sa.Text),
            sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("delivered_at", sa.String(32)),
            sa.UniqueConstraint("hook_id", "event_id", name="uq_outbox_hook_event"),
        )
        op.create_index("ix_outbox_due", OUTBOX, ["status", "next_at"])
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}" + (f" ON {EVENTS}" if postgres else ""))
    if postgres:
        op.execute(
            f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger AS $$ "
            f"BEGIN {_FILL}; RETURN NULL; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {EVENTS} "
            f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {EVENTS} "
            f"WHEN EXISTS (SELECT 1 FROM {HOOKS} WHERE removed_at IS NULL) "
            f"BEGIN {_FILL}; END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}" + (f" ON {EVENTS}" if postgres else ""))
    if postgres:
        op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    for table in (OUTBOX, HOOKS, OVERDUE):
        op.drop_table(table)
