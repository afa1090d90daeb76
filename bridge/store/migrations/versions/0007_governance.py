"""Governance (issue 15): organisations, roles, tokens, saved filters, the audit log; tenant columns.

Every wave-1 row lands in the default organisation (id ``default``): the tenant column is added
NOT NULL with that server default, which fills existing rows without rewriting the table (SQLite
ADD COLUMN; a table copy would cascade deletes through the foreign keys). Every wave-1 user gets
the built-in admin role: before roles existed every user could do everything, and deny-by-default
must not lock the existing operators out. No index on ``tenant_id`` alone: every hot query has a
more selective one (id, device_id, ...), and SQLite's planner, given both, picked the tenant index
and scanned the organisation's rows (seen with EXPLAIN QUERY PLAN). Explicit operations, like 0001.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DEFAULT_ORG = "default"
TENANT_TABLES = (
    "users",
    "devices",
    "auth_sets",
    "inventory",
    "artifacts",
    "deployments",
    "device_deployments",
)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("tenant_token_sha256", sa.String(64), nullable=True, unique=True),
        sa.Column("created_ts", sa.Float, nullable=False),
    )
    op.create_table(
        "identity_map",
        sa.Column("identity", sa.String(64), primary_key=True),
        sa.Column(
            "org_id", sa.String(36), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
        ),
    )
    op.create_table(
        "roles",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_roles_tenant_name"),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
    )
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.Column("expires_ts", sa.Float, nullable=False),
    )
    op.create_table(
        "saved_filters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("terms", sa.JSON, nullable=False),
        sa.Column("created_ts", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_saved_filters_tenant_name"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("change", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_tenant_seq", "audit_log", ["tenant_id", "seq"])
    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    for table in TENANT_TABLES:
        op.add_column(
            table, sa.Column("tenant_id", sa.String(36), nullable=False, server_default=DEFAULT_ORG)
        )
    orgs = sa.table("organizations", sa.column("id"), sa.column("name"), sa.column("created_ts"))
    op.bulk_insert(orgs, [{"id": DEFAULT_ORG, "name": "default", "created_ts": time.time()}])
    # wave-1 users keep what they could do: everything
    op.execute(
        "INSERT INTO user_roles (user_id, role, tenant_id) "
        f"SELECT id, 'RBAC_ROLE_PERMIT_ALL', '{DEFAULT_ORG}' FROM users"
    )


def downgrade() -> None:
    for table in TENANT_TABLES:
        op.drop_column(table, "tenant_id")
    for table in ("audit_heads", "audit_log", "saved_filters", "access_tokens", "user_roles", "roles"):
        op.drop_table(table)
    op.drop_table("identity_map")
    op.drop_table("organizations")
