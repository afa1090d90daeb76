"""Devices bound to a transport identity (the gateway-stamped DTLS identity).

A nullable column and a unique index, so one transport identity belongs to at most one device
(several NULLs are allowed on SQLite and PostgreSQL). Explicit operations, like 0001.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("transport_id", sa.String(64), nullable=True))
    op.create_index("ix_devices_transport_id", "devices", ["transport_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_devices_transport_id", table_name="devices")
    # SQLite >= 3.35 drops a column in place (no table copy, so no cascade through the foreign keys)
    op.drop_column("devices", "transport_id")
