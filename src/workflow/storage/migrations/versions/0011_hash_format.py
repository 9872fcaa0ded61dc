"""Events record the encoding their hash was taken over: ``workflow_events.hash_format``.

Events written from this revision on are hashed as ``wf3`` (the ``wf2`` fields, length-prefixed
text instead of JSON: cheaper for verify to re-compute) and say so in ``hash_format``.
Existing events keep NULL there and their ``wf1``/``wf2`` hashes, which still verify: nothing
is rewritten. The tag is inside the hashed bytes, so changing the column of any event breaks
its hash. The column is added in place (no table copy on SQLite), so the append-only triggers
on ``workflow_events`` stay as they are.

Self-contained on purpose (see 0004): a later change to the application code cannot change
what this migration did.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_events", sa.Column("hash_format", sa.String(8), nullable=True))


def downgrade() -> None:
    # In place on both backends (SQLite >= 3.35): a batch copy of the table would drop its
    # append-only triggers. Events written as wf3 no longer verify after a downgrade.
    op.execute("ALTER TABLE workflow_events DROP COLUMN hash_format")
