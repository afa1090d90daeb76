"""Tables of fleet governance II (issue 16): device configuration, fleet policies, rollouts.

``device_configs``: Mender deviceconfig's configured/reported key-value maps, one row per device.
``fleet_policies``: install windows, consent policy and check-in interval for the whole fleet
(``scope='tenant'``, ``name=''``) or an inventory group (``scope='group'``).
``rollouts``: the phased part of a deployment (phases, gates, retries, its own policy) and where it
stands; ``rollout_devices``: which phase each device of a phased deployment belongs to, and how
many times it retried. A deployment without a ``rollouts`` row is a plain Mender deployment.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from ._tables import metadata

__all__ = ["device_configs", "fleet_policies", "rollout_devices", "rollouts"]

device_configs = Table(
    "device_configs",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("configured", JSON, nullable=False),
    Column("reported", JSON, nullable=False),
    Column("deployment_id", String(36), nullable=True),
    Column("reported_ts", Float, nullable=True),
    Column("updated_ts", Float, nullable=True),
    # the organisation (migration 0008; bridge/store/_tenancy.py scopes every statement)
    Column("tenant_id", String(36), nullable=False, server_default="default"),
)

fleet_policies = Table(
    "fleet_policies",
    metadata,
    # each organisation has its fleet policy and its groups' (migration 0008 rebuilt the table with
    # the organisation in the key; bridge/store/_tenancy.py scopes every statement)
    Column("tenant_id", String(36), primary_key=True),
    Column("scope", String(16), primary_key=True),
    Column("name", String(255), primary_key=True),
    # {"windows": [...], "time_zone": "...", "consent": "..."} (wire/install_policy.py)
    Column("install", JSON, nullable=True),
    Column("checkin_interval", Integer, nullable=True),
    Column("updated_ts", Float, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("deployment_id", String(36), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True),
    # [{"batch_size": int|None, "group": str|None, "start_ts": float|None, "size": int}]
    Column("phases", JSON, nullable=False),
    Column("retries", Integer, nullable=False),
    # {"success_share", "error_share", "error_count", "on_error", "approve"}
    Column("gates", JSON, nullable=False),
    Column("install", JSON, nullable=True),  # the deployment's own install policy (overrides groups)
    # scheduled | running | awaiting_approval | paused | aborted | done
    Column("state", String(24), nullable=False),
    Column("current_phase", Integer, nullable=False),
    Column("reason", Text, nullable=True),
    Column("updated_ts", Float, nullable=False),
    Column("paused_ts", Float, nullable=True),
    # the organisation (migration 0008; bridge/store/_tenancy.py scopes every statement)
    Column("tenant_id", String(36), nullable=False, server_default="default"),
)

rollout_devices = Table(
    "rollout_devices",
    metadata,
    Column(
        "deployment_id",
        String(36),
        ForeignKey("deployments.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("device_id", String(36), primary_key=True),
    Column("phase", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_rollout_devices_device", "device_id"),
    # the organisation (migration 0008; bridge/store/_tenancy.py scopes every statement)
    Column("tenant_id", String(36), nullable=False, server_default="default"),
)
