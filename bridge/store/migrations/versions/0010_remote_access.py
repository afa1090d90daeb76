"""Remote access grants (issue 16 part 4): the owner's time-boxed switch per device.

New table only (``remote_grants``; bridge/store/_gov_tables.py). Sessions are not a table: each
one is an audit entry (``remote.session``) when it ends.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remote_grants",
        sa.Column(
            "device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("granted_by", sa.String(255), nullable=False),
        sa.Column("granted_ts", sa.Float(), nullable=False),
        sa.Column("expires_ts", sa.Float(), nullable=False),
        sa.Column("protocols", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("remote_grants")
