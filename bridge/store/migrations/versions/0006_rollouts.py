"""Fleet governance II (issue 16): device configuration, fleet policies, phased rollouts.

New tables only (bridge/store/_rollout_tables.py). Explicit operations, like 0001.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_configs",
        sa.Column(
            "device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("configured", sa.JSON, nullable=False),
        sa.Column("reported", sa.JSON, nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=True),
        sa.Column("reported_ts", sa.Float, nullable=True),
        sa.Column("updated_ts", sa.Float, nullable=True),
    )
    op.create_table(
        "fleet_policies",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("install", sa.JSON, nullable=True),
        sa.Column("checkin_interval", sa.Integer, nullable=True),
        sa.Column("updated_ts", sa.Float, nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column(
            "deployment_id",
            sa.String(36),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("phases", sa.JSON, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("gates", sa.JSON, nullable=False),
        sa.Column("install", sa.JSON, nullable=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("current_phase", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_ts", sa.Float, nullable=False),
        sa.Column("paused_ts", sa.Float, nullable=True),
    )
    op.create_table(
        "rollout_devices",
        sa.Column(
            "deployment_id",
            sa.String(36),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("phase", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index("ix_rollout_devices_device", "rollout_devices", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_rollout_devices_device", table_name="rollout_devices")
    op.drop_table("rollout_devices")
    op.drop_table("rollouts")
    op.drop_table("fleet_policies")
    op.drop_table("device_configs")
