"""Table definitions (SQLAlchemy Core). Alembic migrations create exactly these.

A table with a ``tenant_id`` column belongs to one organisation per row; every statement on it
is scoped to the organisation in scope (bridge/store/_tenancy.py). ``settings`` and the fleet's
public statistics are installation-wide.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "artifacts",
    "auth_sets",
    "deployments",
    "device_deployments",
    "devices",
    "inventory",
    "metadata",
    "settings",
    "users",
]

metadata = MetaData()

# The server default only fills the rows that existed before organisations (migration 0007,
# which adds the column without rewriting tables); every insert names its tenant, added by the
# tenancy hook (bridge/store/_tenancy.py), which also refuses one without a tenant in scope.
_WAVE1_ORG = "default"

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(255), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("created_ts", Float, nullable=False),
    Column("updated_ts", Float, nullable=False),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    # the device is identified by the exact id_data string (Mender: SHA-256 of it)
    # (outside the default organisation the digest covers the tenant too: bridge/api/_devauth.py)
    Column("id_data_sha256", String(64), nullable=False, unique=True),
    Column("id_data", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_ts", Float, nullable=False),
    Column("updated_ts", Float, nullable=False),
    # the transport identity (gateway-stamped DTLS identity) this device is bound to, set when an
    # auth set presented over it is accepted; one transport identity <-> one device
    # (docs/mqtt_bridge.md, "Token binding")
    Column("transport_id", String(64), nullable=True),
    Index("ix_devices_transport_id", "transport_id", unique=True),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)

auth_sets = Table(
    "auth_sets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("pubkey", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("ts", Float, nullable=False),
    # the transport identity that first presented this key (auth request over MQTT); becomes the
    # device's transport_id when this auth set is accepted
    Column("transport_id", String(64), nullable=True),
    UniqueConstraint("device_id", "pubkey", name="uq_auth_sets_device_pubkey"),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)

inventory = Table(
    "inventory",
    metadata,
    Column(
        "device_id",
        String(36),
        ForeignKey("devices.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("scope", String(16), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("description", Text, nullable=True),
    Column("updated_ts", Float, nullable=False),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, index=True),
    Column("description", Text, nullable=False),
    Column("device_types", JSON, nullable=False),
    Column("signed", Boolean, nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("info", JSON, nullable=False),
    Column("provides", JSON, nullable=False),
    Column("depends", JSON, nullable=False),
    Column("clears_provides", JSON, nullable=False),
    Column("updates", JSON, nullable=False),
    Column("modified_ts", Float, nullable=False),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("artifact_name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("force_installation", Boolean, nullable=False),
    Column("group_name", String(255), nullable=True),
    Column("device_count", Integer, nullable=False),
    Column("created_ts", Float, nullable=False, index=True),
    Column("finished_ts", Float, nullable=True),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)

device_deployments = Table(
    "device_deployments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "deployment_id",
        String(36),
        ForeignKey("deployments.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # no foreign key: the record outlives a decommissioned device
    Column("device_id", String(36), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("substate", String(200), nullable=True),
    Column("artifact_id", String(36), nullable=True),
    Column("log", JSON, nullable=True),
    Column("created_ts", Float, nullable=False),
    Column("started_ts", Float, nullable=True),
    Column("finished_ts", Float, nullable=True),
    UniqueConstraint("deployment_id", "device_id", name="uq_device_deployments_dep_dev"),
    # last: migration 0007 added it to the existing tables
    Column("tenant_id", String(36), nullable=False, server_default=_WAVE1_ORG),
)
