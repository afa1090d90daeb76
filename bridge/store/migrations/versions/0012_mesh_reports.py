"""Roots' stream progress reports for the admin UI's mesh view (issue 17; wire/SPEC.md §7).

New table only (``mesh_reports``; bridge/store/_fleet_tables.py).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mesh_reports",
        sa.Column(
            "root_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("stream_id", sa.String(16), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("artifact_id", sa.String(36), nullable=False),
        sa.Column("artifact_name", sa.String(255), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("blocks", sa.BigInteger(), nullable=False),
        sa.Column("bytes_on_air", sa.BigInteger(), nullable=False),
        sa.Column("frames_on_air", sa.BigInteger(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("reported_ts", sa.Float(), nullable=False),
    )
    op.create_index("ix_mesh_reports_tenant_ts", "mesh_reports", ["tenant_id", "reported_ts"])


def downgrade() -> None:
    op.drop_index("ix_mesh_reports_tenant_ts", "mesh_reports")
    op.drop_table("mesh_reports")
