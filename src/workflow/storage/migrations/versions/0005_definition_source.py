"""Where each stored definition came from: ``bundled``, or the extra file it was read from.

An extra ``--definitions`` directory may carry a program id that is also bundled only when the
operator allows it explicitly; recording the source lets ``programs list`` and ``audit verify``
show which instances run under rules that did not ship with workflow.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib
from importlib import resources

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _bundled_hashes() -> set[str]:
    """Content hashes of the definitions shipped with this package (self-contained on purpose:
    a migration must not change meaning when the application code changes)."""
    root = resources.files("workflow.definitions")
    return {
        hashlib.sha256(entry.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
        for entry in root.iterdir()
        if entry.name.endswith((".yaml", ".yml"))
    }


def upgrade() -> None:
    op.add_column(
        "workflow_definitions",
        sa.Column("source", sa.Text, nullable=False, server_default="bundled"),
    )
    # Rows stored before this revision: a text identical to a bundled file is bundled; any
    # other text came from an extra directory, whose file name the row already holds.
    table = sa.table(
        "workflow_definitions",
        sa.column("id", sa.Integer),
        sa.column("content_hash", sa.String),
        sa.column("source_file", sa.Text),
        sa.column("source", sa.Text),
    )
    bind = op.get_bind()
    bundled = _bundled_hashes()
    rows = bind.execute(sa.select(table.c.id, table.c.content_hash, table.c.source_file)).all()
    for row_id, content_hash, source_file in rows:
        if content_hash not in bundled:
            bind.execute(
                table.update()
                .where(table.c.id == row_id)
                .values(source=source_file or "unknown (stored before revision 0004)")
            )


def downgrade() -> None:
    with op.batch_alter_table("workflow_definitions") as batch:
        batch.drop_column("source")
