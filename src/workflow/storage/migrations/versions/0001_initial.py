"""Initial schema: definitions, instances, events (append-only), idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("program", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_file", sa.Text, nullable=False),
        sa.Column("source_text", sa.Text, nullable=False),
        sa.Column("stored_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("program", "version", name="uq_definition_version"),
    )
    op.create_table(
        "workflow_instances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("program", sa.String(100), nullable=False),
        sa.Column("program_version", sa.Integer, nullable=False),
        sa.Column(
            "definition_id", sa.Integer, sa.ForeignKey("workflow_definitions.id"), nullable=False
        ),
        sa.Column("area_code", sa.String(6), nullable=False),
        sa.Column("province_code", sa.String(2), nullable=False),
        sa.Column("fiscal_year", sa.Integer, nullable=False),
        sa.Column("duplicate_no", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("state", sa.String(100), nullable=False),
        sa.Column("active", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.UniqueConstraint(
            "program", "area_code", "fiscal_year", "duplicate_no", name="uq_instance_area_year"
        ),
    )
    op.create_index(
        "ix_instances_report",
        "workflow_instances",
        ["fiscal_year", "program", "province_code", "state"],
    )
    op.create_index("ix_instances_area", "workflow_instances", ["area_code"])
    op.create_table(
        "workflow_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "instance_id", sa.Integer, sa.ForeignKey("workflow_instances.id"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("role", sa.String(100), nullable=False),
        sa.Column("os_user", sa.Text, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("instance_id", "seq", name="uq_event_seq"),
    )
    op.create_index("ix_events_at", "workflow_events", ["at"])
    op.create_index("ix_events_actor", "workflow_events", ["actor"])
    op.create_table(
        "workflow_idempotency",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    append_only("workflow_events")


def append_only(table: str) -> None:
    """Refuse UPDATE and DELETE on ``table``: defence in depth (verify is the real check)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION workflow_refuse_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION workflow_refuse_change()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table("workflow_idempotency")
    op.drop_table("workflow_events")
    op.drop_table("workflow_instances")
    op.drop_table("workflow_definitions")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS workflow_refuse_change()")
