"""Tables of the fleet's public statistics (issue 18): weekly totals, never per-device history.

``fleet_weekly`` holds one row per (window, version, device type, age bucket, source) with a
count; ``fleet_marks`` one row per device: the first window it was counted in (its age) and the
last (so a week counts it once). A mark is overwritten, never appended to: no history of when a
device checked in is kept for the statistics. ``source`` is ``checkin`` (the server saw the
device's own check-in) or ``mesh`` (a root's sealed count record for its children).
``fleet_mesh_seen`` holds, for this week and last week only (older rows are deleted whenever a
record arrives), one 16-byte digest per (root, window, age bucket, version, device type) already
added, so a record re-sent by its root is counted once; it holds no device id.

``mesh_reports`` (not statistics: the admin UI's mesh view) holds a root's newest progress
report per (root, stream) (wire/SPEC.md §7, bridge/api/_mesh_reports.py), at most 8 streams per
root; its rows go with the root device.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from ._tables import metadata

__all__ = ["fleet_marks", "fleet_mesh_seen", "fleet_weekly", "mesh_reports"]

fleet_weekly = Table(
    "fleet_weekly",
    metadata,
    Column("window", Integer, primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("device_type", String(32), primary_key=True),
    Column("age_bucket", Integer, primary_key=True),
    Column("source", String(8), primary_key=True),
    Column("count", Integer, nullable=False),
)

fleet_marks = Table(
    "fleet_marks",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("first_window", Integer, nullable=False),
    Column("last_window", Integer, nullable=False),
)

fleet_mesh_seen = Table(
    "fleet_mesh_seen",
    metadata,
    Column("window", Integer, primary_key=True),
    Column("digest", LargeBinary(16), primary_key=True),
)

mesh_reports = Table(
    "mesh_reports",
    metadata,
    Column("root_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("stream_id", String(16), primary_key=True),  # hex of the 8-byte stream id
    Column("tenant_id", String(36), nullable=False),
    Column("artifact_id", String(36), nullable=False),
    Column("artifact_name", String(255), nullable=False),
    Column("final", Boolean, nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("blocks", BigInteger, nullable=False),
    Column("bytes_on_air", BigInteger, nullable=False),
    Column("frames_on_air", BigInteger, nullable=False),
    Column("members", Integer, nullable=False),
    Column("nodes", JSON, nullable=False),  # [[device id, state, missing], ...] (at most 128)
    Column("reported_ts", Float, nullable=False),
    Index("ix_mesh_reports_tenant_ts", "tenant_id", "reported_ts"),
)
