"""Request log: one row per answered MQTT request, shared by every bridge worker (issue 20).

New table only (``request_log``; bridge/store/_request_log.py). Explicit operations, like 0001.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("key", sa.LargeBinary(16), primary_key=True),
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
        sa.Column("reply", sa.LargeBinary(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
    )
    op.create_index("ix_request_log_created", "request_log", ["created"])


def downgrade() -> None:
    op.drop_index("ix_request_log_created", "request_log")
    op.drop_table("request_log")
