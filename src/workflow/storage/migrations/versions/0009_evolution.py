"""Program evolution and mistakes (issue 13): grants that expire, attachments.

- ``workflow_grants.expires_at``: a grant given with ``--until DATE`` stops covering anything
  at the end of that day (Thai time); NULL for a grant without an end. The grant event that
  recorded it carries the same time in its (hashed) scope.
- ``workflow_attachments``: files given as evidence of type ``file``, content-addressed by
  SHA-256 (stored in the database when no attachments directory is used).

Both are added in place (no table copy on SQLite), so no trigger is dropped. Self-contained on
purpose (see 0004).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Each step only if not there yet: a database put back to an earlier revision by hand
    # (as the upgrade tests do) may still hold them.
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("workflow_grants")}
    if "expires_at" not in columns:
        op.add_column("workflow_grants", sa.Column("expires_at", sa.String(32), nullable=True))
    if inspector.has_table("workflow_attachments"):
        return
    op.create_table(
        "workflow_attachments",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.Column("stored_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workflow_attachments")
    op.execute("ALTER TABLE workflow_grants DROP COLUMN expires_at")
