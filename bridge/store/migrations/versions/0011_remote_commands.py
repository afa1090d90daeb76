"""Remote diagnostics of MQTT-SN nodes (issue 16 part 4): queued ping/logs/reboot commands.

New table only (``remote_commands``; bridge/store/_gov_tables.py).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remote_commands",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column(
            "device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("issued_by", sa.String(255), nullable=False),
        sa.Column("issued_ts", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("sent_ts", sa.Float(), nullable=True),
        sa.Column("done_ts", sa.Float(), nullable=True),
    )
    op.create_index("ix_remote_commands_device", "remote_commands", ["device_id", "issued_ts"])


def downgrade() -> None:
    op.drop_index("ix_remote_commands_device", "remote_commands")
    op.drop_table("remote_commands")
