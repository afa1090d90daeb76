"""Governance tables (issue 15): organisations, roles, tokens, saved filters, the audit log;
remote-access grants (issue 16).

``organizations`` and ``identity_map`` are installation-wide (the lookups that *find* a tenant:
a tenant token at enrolment, a PSK/certificate identity at the gateway); every other table here
has a ``tenant_id`` and is scoped like the fleet's tables (bridge/store/_tenancy.py).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from ._tables import metadata

__all__ = [
    "access_tokens",
    "audit_heads",
    "audit_log",
    "identity_map",
    "organizations",
    "remote_commands",
    "remote_grants",
    "roles",
    "saved_filters",
    "user_roles",
]

DEFAULT_ORG_ID = "default"

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    # SHA-256 of the tenant token devices present (mender.conf TenantToken); the token itself is
    # shown once, when the organisation is created
    Column("tenant_token_sha256", String(64), nullable=True, unique=True),
    Column("created_ts", Float, nullable=False),
)

identity_map = Table(
    "identity_map",
    metadata,
    # a gateway-verified transport identity (PSK identity, certificate subject) -> its organisation
    Column("identity", String(64), primary_key=True),
    Column("org_id", String(36), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
)

roles = Table(
    "roles",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("permissions", JSON, nullable=False),  # permission names (bridge/service/_permissions.py)
    Column("groups", JSON, nullable=False),  # device groups the permissions are limited to; [] = all
    Column("created_ts", Float, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_roles_tenant_name"),
)

user_roles = Table(
    "user_roles",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_ts", Float, nullable=False),
    Column("expires_ts", Float, nullable=False),
)

saved_filters = Table(
    "saved_filters",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("name", String(255), nullable=False),
    Column("terms", JSON, nullable=False),  # Mender inventory v2 filter terms
    Column("created_ts", Float, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_saved_filters_tenant_name"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("tenant_id", String(36), nullable=False),
    Column("ts", Float, nullable=False),
    Column("actor_type", String(16), nullable=False),  # user, token, operator, device
    Column("actor_id", String(64), nullable=False),
    Column("actor_name", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("change", JSON, nullable=False),  # a summary of the change (never secrets)
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_tenant_seq", "tenant_id", "seq"),
)

# the head of each organisation's chain: one row per tenant, updated in the same transaction as
# the entry it points at (on PostgreSQL its row lock orders concurrent writers of one tenant)
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("tenant_id", String(36), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# remote access (issue 16, docs/remote_access.md): OFF unless the device's owner granted it, for a
# time box; one row per device (a new grant replaces the old one, a revoke deletes it)
remote_grants = Table(
    "remote_grants",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("granted_by", String(255), nullable=False),  # the owner's name (user e-mail)
    Column("granted_ts", Float, nullable=False),
    Column("expires_ts", Float, nullable=False),
    Column("protocols", JSON, nullable=False),  # ["shell", "filetransfer"] or a subset
)

# MQTT-SN nodes' bounded remote diagnostics (ping, logs, reboot) under the same grant rules: a
# user queues a command, the node fetches it through the device API while the grant is in force
# and answers it
remote_commands = Table(
    "remote_commands",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("command", String(16), nullable=False),  # ping, logs, reboot
    Column("args", JSON, nullable=False),
    Column("issued_by", String(255), nullable=False),
    Column("issued_ts", Float, nullable=False),
    Column("state", String(16), nullable=False),  # pending, sent, done, refused, expired
    Column("result", JSON, nullable=True),
    Column("sent_ts", Float, nullable=True),
    Column("done_ts", Float, nullable=True),
    Index("ix_remote_commands_device", "device_id", "issued_ts"),
)
