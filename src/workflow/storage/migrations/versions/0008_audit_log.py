"""The log of every audit entry: queue, leaves, tree nodes, and the triggers that fill the queue.

* ``workflow_audit_queue``: an ``AFTER INSERT`` trigger on each audit table (events, grant
  events, denials, account events) adds the new entry (source, its id, its hash) here in the
  entry's own transaction. ``workflow audit checkpoint``/``prove``/``verify`` integrate the
  queue into the log after commit (``workflow.audit.log``).
* ``workflow_audit_log`` (the leaves) and ``workflow_audit_nodes`` (every perfect subtree's
  hash) are append-only like the other audit tables.
* Entries already stored are queued here, oldest first (by time, then grant events, account
  events, denials, events, then id): the log's starting point is the trail as `workflow init`
  found it.

Self-contained on purpose (see 0004): a later change to the application code cannot change
what this migration did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

QUEUE, LOG, NODES = "workflow_audit_queue", "workflow_audit_log", "workflow_audit_nodes"
#: source name -> (table, id column); the order is the tie-break of the initial queue.
SOURCES = (
    ("grant", "workflow_grant_events", "seq"),
    ("account", "workflow_account_events", "seq"),
    ("denial", "workflow_denials", "id"),
    ("event", "workflow_events", "id"),
)


def upgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    # Idempotent: a database whose version row was set back by hand may hold all this
    # already; then nothing is created twice and no entry is queued twice.
    if QUEUE not in set(sa.inspect(conn).get_table_names()):
        _create_tables()
    for table in (LOG, NODES):
        _append_only(table, postgres)
    for source, table, column in SOURCES:
        _drop_trigger(f"{table}_audit_queue", table, postgres)
        if postgres:
            op.execute(
                f"""
                CREATE OR REPLACE FUNCTION {table}_to_audit_queue() RETURNS trigger AS $$
                BEGIN
                    INSERT INTO {QUEUE} (source, source_id, entry_hash)
                    VALUES ('{source}', NEW.{column}, NEW.hash);
                    RETURN NULL;
                END;
                $$ LANGUAGE plpgsql
                """
            )
            op.execute(
                f"CREATE TRIGGER {table}_audit_queue AFTER INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_to_audit_queue()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {table}_audit_queue AFTER INSERT ON {table} BEGIN "
                f"INSERT INTO {QUEUE} (source, source_id, entry_hash) "
                f"VALUES ('{source}', NEW.{column}, NEW.hash); END"
            )
    union = " UNION ALL ".join(
        f"SELECT '{source}' AS source, {column} AS source_id, hash, at, {rank} AS rank "
        f"FROM {table}" + (" WHERE seq IS NOT NULL" if table == "workflow_denials" else "")
        for rank, (source, table, column) in enumerate(SOURCES)
    )
    op.execute(
        f"INSERT INTO {QUEUE} (source, source_id, entry_hash) "
        f"SELECT source, source_id, hash FROM ({union}) AS entries WHERE NOT EXISTS "
        f"(SELECT 1 FROM {LOG} l WHERE l.source = entries.source AND "
        "l.source_id = entries.source_id) AND NOT EXISTS "
        f"(SELECT 1 FROM {QUEUE} q WHERE q.source = entries.source AND "
        "q.source_id = entries.source_id) ORDER BY at, rank, source_id"
    )


def _create_tables() -> None:
    op.create_table(
        QUEUE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("entry_hash", sa.Text, nullable=False),
    )
    op.create_table(
        LOG,
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("entry_hash", sa.Text, nullable=False),
        sa.Column("integrated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_audit_log_source", LOG, ["source", "source_id"], unique=True)
    op.create_table(
        NODES,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )


def _drop_trigger(name: str, table: str, postgres: bool) -> None:
    op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))


def _append_only(table: str, postgres: bool) -> None:
    """Refuse UPDATE, DELETE (and on PostgreSQL TRUNCATE), as for the other audit tables."""
    if postgres:
        # workflow_refuse_change() exists since 0001.
        _drop_trigger(f"{table}_append_only", table, postgres)
        _drop_trigger(f"{table}_no_truncate", table, postgres)
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION workflow_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION workflow_refuse_change()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            _drop_trigger(f"{table}_no_{action.lower()}", table, postgres)
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for _source, table, _column in SOURCES:
        op.execute(
            f"DROP TRIGGER IF EXISTS {table}_audit_queue" + (f" ON {table}" if postgres else "")
        )
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {table}_to_audit_queue()")
    for table in (NODES, LOG, QUEUE):
        op.drop_table(table)  # their triggers go with them
