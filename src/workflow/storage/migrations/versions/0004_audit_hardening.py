"""Audit hardening: denials hash-chained, idempotency rows bound to their event, no TRUNCATE.

* ``workflow_denials`` gains ``seq``, ``prev_hash`` and ``hash``: refusals form one chain (like
  grant events), so deleting or editing one is detected by ``audit verify`` and digests.
  Denials already stored are chained here, in ``id`` order, as the chain's starting point.
* ``workflow_idempotency`` gains ``event_hash``: the hash of the event the key produced, so a
  key row rewritten to point at another event is detected (filled in here for existing keys).
* PostgreSQL: statement-level ``BEFORE TRUNCATE`` triggers on every append-only table (the
  per-row UPDATE/DELETE triggers do not see TRUNCATE).

Self-contained on purpose: it defines what it needs instead of importing workflow code, so a
later change to the engine cannot change what this migration did.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APPEND_ONLY = ("workflow_events", "workflow_grant_events", "workflow_denials")
DENIAL_FORMAT = "wd1"
GENESIS = "0" * 64
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


DENIAL_FIELDS = (
    "seq",
    "actor",
    "role",
    "action",
    "program",
    "instance_id",
    "area_code",
    "reason",
    "os_user",
    "at",
    "prev_hash",
)


def _denial_hash(row: Mapping[str, Any]) -> str:
    # The same encoding as workflow.audit.chain.denial_hash (a test keeps the two in step).
    payload = _ENCODER.encode([DENIAL_FORMAT, *(row[name] for name in DENIAL_FIELDS)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _without_denial_triggers(conn: sa.Connection, work: Callable[[], None]) -> None:
    """Run ``work()`` with the denials' append-only triggers out of the way (owner only)."""
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE workflow_denials DISABLE TRIGGER workflow_denials_append_only")
        work()
        op.execute("ALTER TABLE workflow_denials ENABLE TRIGGER workflow_denials_append_only")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS workflow_denials_no_{action}")
        work()
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER workflow_denials_no_{action.lower()} BEFORE {action} "
                "ON workflow_denials "
                "BEGIN SELECT RAISE(ABORT, 'workflow_denials is append-only'); END"
            )


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("workflow_denials", recreate="never") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("workflow_idempotency", recreate="never") as batch:
        batch.add_column(sa.Column("event_hash", sa.String(64), nullable=False, server_default=""))

    denials = sa.table(
        "workflow_denials",
        *(
            sa.column(c)
            for c in (
                "id",
                "seq",
                "actor",
                "role",
                "action",
                "program",
                "instance_id",
                "area_code",
                "reason",
                "os_user",
                "at",
                "prev_hash",
                "hash",
            )
        ),
    )

    def chain_existing() -> None:
        prev = GENESIS
        rows = conn.execute(sa.select(denials).order_by(denials.c.id)).all()
        for n, row in enumerate(rows, start=1):
            digest = _denial_hash({**row._asdict(), "seq": n, "prev_hash": prev})
            conn.execute(
                denials.update()
                .where(denials.c.id == row.id)
                .values(seq=n, prev_hash=prev, hash=digest)
            )
            prev = digest

    _without_denial_triggers(conn, chain_existing)
    op.create_index("ix_denials_seq", "workflow_denials", ["seq"], unique=True)

    # Each existing key row gets the hash of the event it points at.
    op.execute(
        "UPDATE workflow_idempotency SET event_hash = COALESCE((SELECT e.hash FROM "
        "workflow_events e WHERE e.instance_id = workflow_idempotency.instance_id "
        "AND e.seq = workflow_idempotency.seq), '')"
    )

    if conn.dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION workflow_refuse_change()"
            )


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.drop_index("ix_denials_seq", table_name="workflow_denials")
    with op.batch_alter_table("workflow_idempotency") as batch:
        batch.drop_column("event_hash")
    with op.batch_alter_table("workflow_denials") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
