"""Fleet public statistics: weekly totals and one mark per device (issue 18).

New tables only (``fleet_weekly``, ``fleet_marks``; bridge/store/_fleet_tables.py). Explicit
operations, like 0001.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_weekly",
        sa.Column("window", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("device_type", sa.String(32), primary_key=True),
        sa.Column("age_bucket", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(8), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "fleet_marks",
        sa.Column(
            "device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("first_window", sa.Integer, nullable=False),
        sa.Column("last_window", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fleet_marks")
    op.drop_table("fleet_weekly")
