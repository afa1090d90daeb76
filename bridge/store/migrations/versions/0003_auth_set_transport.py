"""Auth sets remember the transport identity that presented their key.

An auth request over MQTT carries the gateway-verified identity (PSK identity / certificate CN).
It is recorded on the auth set (the device's key) it presented, and becomes the device's binding
(``devices.transport_id``) only when that auth set is accepted: a node that claims another
device's ``id_data`` with its own key adds an auth set of its own and cannot lock the real device
out (docs/mqtt_bridge.md, "Token binding"). Explicit operations, like 0001.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("auth_sets", sa.Column("transport_id", sa.String(64), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place (no table copy, so no cascade through the foreign keys)
    op.drop_column("auth_sets", "transport_id")
