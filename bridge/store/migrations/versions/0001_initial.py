"""Initial schema.

Written out as explicit operations (not ``table.create()`` from ``_tables.py``), so this
revision keeps describing the schema of revision 0001 when the table definitions move on.
tests/bridge/store/test_migrations.py checks that upgrading an empty database yields exactly
the metadata of ``bridge/store/_tables.py`` (autogenerate finds no difference).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("id_data_sha256", sa.String(64), nullable=False),
        sa.Column("id_data", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.UniqueConstraint("id_data_sha256"),
    )
    op.create_table(
        "auth_sets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("pubkey", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("device_id", "pubkey", name="uq_auth_sets_device_pubkey"),
    )
    op.create_table(
        "inventory",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "scope", "name"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("device_types", sa.JSON(), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("provides", sa.JSON(), nullable=False),
        sa.Column("depends", sa.JSON(), nullable=False),
        sa.Column("clears_provides", sa.JSON(), nullable=False),
        sa.Column("updates", sa.JSON(), nullable=False),
        sa.Column("modified_ts", sa.Float(), nullable=False),
    )
    op.create_index("ix_artifacts_name", "artifacts", ["name"])
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("artifact_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("force_installation", sa.Boolean(), nullable=False),
        sa.Column("group_name", sa.String(255), nullable=True),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("finished_ts", sa.Float(), nullable=True),
    )
    op.create_index("ix_deployments_created_ts", "deployments", ["created_ts"])
    op.create_table(
        "device_deployments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("deployment_id", sa.String(36), nullable=False),
        # no foreign key: the record outlives a decommissioned device
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("substate", sa.String(200), nullable=True),
        sa.Column("artifact_id", sa.String(36), nullable=True),
        sa.Column("log", sa.JSON(), nullable=True),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("started_ts", sa.Float(), nullable=True),
        sa.Column("finished_ts", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("deployment_id", "device_id", name="uq_device_deployments_dep_dev"),
    )
    op.create_index("ix_device_deployments_device_id", "device_deployments", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_device_deployments_device_id", table_name="device_deployments")
    op.drop_table("device_deployments")
    op.drop_index("ix_deployments_created_ts", table_name="deployments")
    op.drop_table("deployments")
    op.drop_index("ix_artifacts_name", table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_table("inventory")
    op.drop_table("auth_sets")
    op.drop_table("devices")
    op.drop_table("users")
    op.drop_table("settings")
