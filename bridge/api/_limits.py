"""Size limits on what the device and management API accepts and stores, in one place.

:class:`ApiLimits` lives in ``Settings.limits`` and so reaches every handler through
``ApiContext``; the handlers enforce it, so the HTTP adapter and the MQTT adapter (which share the
routing table) enforce the very same limits. Every limit is checked before the work it guards
(parsing, signature checks, database writes). Defaults and rationale: docs/limits.md,
"Device and management API".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._types import ApiError

__all__ = ["ApiLimits", "check_body_size", "json_depth"]


@dataclass(frozen=True, slots=True)
class ApiLimits:
    # -- auth_requests (unauthenticated) -------------------------------------------------------
    auth_body_max: int = 16 * 1024  # whole auth request body (id_data + PEM key + tenant token)
    id_data_max_bytes: int = 4096  # the id_data string (Mender: identity is a few attributes)
    id_data_max_keys: int = 32
    id_data_max_depth: int = 2  # {"mac": ["a", "b"]}: an object of scalars or lists of scalars
    pubkey_max_bytes: int = 8192  # RSA-8192 SPKI PEM is ~1.5 KiB
    # -- inventory -----------------------------------------------------------------------------
    inventory_body_max: int = 512 * 1024
    inventory_max_attributes: int = 100  # Mender: "up to 100 inventory attributes" per update
    inventory_stored_max_attributes: int = 100  # per device, "inventory" scope, after a PATCH
    inventory_name_max: int = 255  # characters
    inventory_value_max_bytes: int = 4096  # JSON-encoded value (a string, number or list)
    inventory_description_max: int = 1024  # characters
    # -- deployments (device side) ---------------------------------------------------------------
    substate_max: int = 200  # characters (Mender deployments' limit)
    log_body_max: int = 1024 * 1024  # the whole PUT .../log body
    log_max_messages: int = 10_000
    log_message_max: int = 8192  # characters of one message's text
    log_field_max: int = 64  # characters of a message's timestamp and level
    # -- login (useradm) -------------------------------------------------------------------------
    login_header_max: int = 1024  # bytes of the Authorization header of a login
    login_user_burst: int = 10  # failed logins per user name before throttling
    login_user_refill: float = 6.0  # seconds per regained attempt (10 per minute)
    login_source_burst: int = 30  # login attempts per source address (HTTP) / stamped identity
    login_source_refill: float = 2.0  # seconds per regained attempt (30 per minute)
    login_state_max: int = 10_000  # buckets kept per kind (user, source)
    password_workers: int = 2  # scrypt checks running at once (in the thread pool)
    password_queue_max: int = 16  # scrypt checks waiting for a worker; more -> 429 at once
    # -- chunk maps (meshota extension) ----------------------------------------------------------
    chunk_map_sizes_per_artifact: int = 4  # distinct chunk sizes signed and kept per artifact
    # -- roots' stream progress reports (meshota extension, wire/SPEC.md §7) ----------------------
    mesh_report_burst: int = 16  # reports per root before throttling (per server process)
    mesh_report_refill: float = 1.0  # seconds per regained report
    # -- device configuration (deviceconfig) -----------------------------------------------------
    config_body_max: int = 64 * 1024  # the whole configuration body (configured or reported)
    config_max_keys: int = 100  # key-value pairs in one configuration
    config_key_max: int = 255  # characters of a key
    config_value_max: int = 4096  # characters of a value
    # -- remote access (deviceconnect, docs/remote_access.md) -------------------------------------
    remote_grant_max: float = 24 * 3600.0  # the longest time box an owner may grant at once
    remote_devices_max: int = 10_000  # connected mender-connect links per process
    remote_sessions_per_device: int = 4  # open user sessions on one device
    remote_sessions_max: int = 200  # open user sessions per process
    remote_sessions_per_user: int = 8  # open sessions of one user (all devices) per process
    remote_user_message_max: int = 8 * 1024  # user -> device message (fits mender-connect's read limit)
    remote_device_message_max: int = 256 * 1024  # device -> user message
    remote_commands_pending: int = 8  # diagnostics commands waiting for one node
    remote_result_max: int = 8 * 1024  # a node's answer to a diagnostics command
    remote_reply_timeout: float = 15.0  # the HTTP file routes wait this long for each device answer
    remote_file_max: int = 16 << 20  # one download or upload (held in memory; the route's body limit)
    remote_recheck: float = 5.0  # seconds between re-reads of a session's grant (revocation delay)


def check_body_size(body: bytes, limit: int, what: str) -> None:
    """413 before any parsing when ``body`` is over ``limit`` bytes."""
    if len(body) > limit:
        raise ApiError(413, f"{what} body of {len(body)} bytes exceeds the limit of {limit} bytes")


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value: a scalar is 0, ``[]`` / ``{}`` of scalars is 1."""
    depth, level = 0, [(value, 0)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict):
            depth = max(depth, d + 1)
            level.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            depth = max(depth, d + 1)
            level.extend((v, d + 1) for v in item)
    return depth


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (what the store keeps)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
