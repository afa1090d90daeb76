"""A root's count records counted once: digests of (root, window, cell) for two weeks (issue 18).

New table only (``fleet_mesh_seen``; bridge/store/_fleet_tables.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_mesh_seen",
        sa.Column("window", sa.Integer, primary_key=True),
        sa.Column("digest", sa.LargeBinary(16), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("fleet_mesh_seen")
