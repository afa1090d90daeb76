"""Table definitions (SQLAlchemy Core). Alembic migrations create exactly these."""

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
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    # the device is identified by the exact id_data string (Mender: SHA-256 of it)
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
)
