"""Events record how the caller was authenticated: ``workflow_events.auth``.

An event fired through the service names the session or API token that carried it
(``session:...`` / ``token:ID``); its hash then covers that too (encoding ``wf2``). Existing
events keep ``auth`` NULL and their ``wf1`` hashes, which still verify: nothing is rewritten.
The column is added in place (no table copy on SQLite), so the append-only triggers on
``workflow_events`` stay as they are.

Self-contained on purpose (see 0004): a later change to the application code cannot change
what this migration did.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_events", sa.Column("auth", sa.String(64), nullable=True))


def downgrade() -> None:
    # In place on both backends (SQLite >= 3.35): a batch copy of the table would drop its
    # append-only triggers.
    op.execute("ALTER TABLE workflow_events DROP COLUMN auth")
