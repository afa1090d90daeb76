"""Phased rollouts, device configurations and policies belong to an organisation (issue 15 on top
of 0006): ``tenant_id`` NOT NULL with server default ``default`` on ``device_configs``,
``rollouts`` and ``rollout_devices`` (ADD COLUMN, no table copy: on SQLite a copy would cascade
deletes through their foreign keys); ``fleet_policies`` rebuilt with the organisation in its key
(each organisation has a fleet policy and its own groups'; no foreign key touches the table, so
the copy is safe). Existing rows land in the default organisation. Explicit operations, like 0001.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DEFAULT_ORG = "default"
TABLES = ("device_configs", "rollouts", "rollout_devices")


def _policies(name: str, *, tenant: bool) -> None:
    columns = [sa.Column("tenant_id", sa.String(36), primary_key=True)] if tenant else []
    op.create_table(
        name,
        *columns,
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("install", sa.JSON, nullable=True),
        sa.Column("checkin_interval", sa.Integer, nullable=True),
        sa.Column("updated_ts", sa.Float, nullable=False),
    )


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("tenant_id", sa.String(36), nullable=False, server_default=DEFAULT_ORG)
        )
    _policies("fleet_policies_0008", tenant=True)
    op.execute(
        "INSERT INTO fleet_policies_0008 (tenant_id, scope, name, install, checkin_interval, updated_ts) "
        f"SELECT '{DEFAULT_ORG}', scope, name, install, checkin_interval, updated_ts FROM fleet_policies"
    )
    op.drop_table("fleet_policies")
    op.rename_table("fleet_policies_0008", "fleet_policies")


def downgrade() -> None:
    _policies("fleet_policies_0007", tenant=False)
    op.execute(
        "INSERT INTO fleet_policies_0007 (scope, name, install, checkin_interval, updated_ts) "
        "SELECT scope, name, install, checkin_interval, updated_ts FROM fleet_policies "
        f"WHERE tenant_id = '{DEFAULT_ORG}'"
    )
    op.drop_table("fleet_policies")
    op.rename_table("fleet_policies_0007", "fleet_policies")
    for table in TABLES:
        op.drop_column(table, "tenant_id")
