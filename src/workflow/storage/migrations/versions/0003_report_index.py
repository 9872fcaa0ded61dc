"""A covering index for the report: group by program, province, state and active leaves.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The report groups every instance by (program, province, state, active); with this index
    # the database reads the index alone, in order, instead of sorting the table.
    op.drop_index("ix_instances_report", table_name="workflow_instances")
    op.create_index(
        "ix_instances_report",
        "workflow_instances",
        ["program", "province_code", "state", "active", "fiscal_year"],
    )


def downgrade() -> None:
    op.drop_index("ix_instances_report", table_name="workflow_instances")
    op.create_index(
        "ix_instances_report",
        "workflow_instances",
        ["fiscal_year", "program", "province_code", "state"],
    )
