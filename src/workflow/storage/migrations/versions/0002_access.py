"""Who may do what: grants (current), grant events (hash-chained), denials.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_grants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("role", sa.String(100), nullable=False),
        # '' means everywhere / every program (NULLs would not collide in the unique key).
        sa.Column("area_code", sa.String(6), nullable=False),
        sa.Column("program", sa.String(100), nullable=False),
        sa.Column("granted_by", sa.Text, nullable=False),
        sa.Column("granted_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("actor", "role", "area_code", "program", name="uq_grant"),
    )
    op.create_index("ix_grants_actor", "workflow_grants", ["actor", "role"])
    op.create_table(
        "workflow_grant_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("by", sa.Text, nullable=False),
        sa.Column("os_user", sa.Text, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "workflow_denials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("role", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("program", sa.String(100), nullable=True),
        sa.Column("instance_id", sa.Integer, nullable=True),
        sa.Column("area_code", sa.String(6), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("os_user", sa.Text, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
    )
    initial = importlib.import_module("workflow.storage.migrations.versions.0001_initial")
    initial.append_only("workflow_grant_events")
    initial.append_only("workflow_denials")


def downgrade() -> None:
    op.drop_table("workflow_denials")
    op.drop_table("workflow_grant_events")
    op.drop_table("workflow_grants")
