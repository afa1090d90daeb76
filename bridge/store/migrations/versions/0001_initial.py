"""Initial schema.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from bridge.store import _tables as t

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ORDER = [
    t.settings,
    t.users,
    t.devices,
    t.auth_sets,
    t.inventory,
    t.artifacts,
    t.deployments,
    t.device_deployments,
]


def upgrade() -> None:
    bind = op.get_bind()
    for table in _ORDER:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_ORDER):
        table.drop(bind)
