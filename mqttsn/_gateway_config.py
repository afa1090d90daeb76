"""The gateway's configuration, in a module of its own: every gateway module may import it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ._topics import PredefinedTopics

__all__ = ["GatewayConfig", "Mode"]

Mode = Literal["transparent", "aggregating"]


@dataclass(slots=True)
class GatewayConfig:
    gw_id: int = 1
    mode: Mode = "transparent"
    max_packet_size: int = 1500
    retry_interval: float = 10.0  # T_RETRY
    max_retries: int = 5  # N_RETRY
    keep_alive_factor: float = 1.5
    max_sessions: int = 100_000
    max_buffered: int = 1000  # messages kept per sleeping client
    # aggregating mode: a QoS 1/2 broker message no node subscribes to (e.g. redelivered after a
    # gateway restart, before its node is back) stays unacknowledged this long, waiting for one
    unrouted_hold: float = 60.0
    max_unrouted: int = 1000
    max_topics_per_session: int = 1000
    advertise_interval: float | None = None  # T_ADV; None = no ADVERTISE
    predefined: PredefinedTopics = field(default_factory=PredefinedTopics)
    # Keyless peers (no verified identity): see _gateway_admission.py and docs/limits.md.
    max_unverified_sessions: int = 1024
    max_unverified_per_source: int = 32
    unverified_connect_rate_per_source: float = 5.0  # new keyless sessions/s per source
    unverified_connect_rate: float = 200.0  # new keyless sessions/s in all
    max_remembered_verified_ids: int = 100_000
    # client ids only a key holder may use (e.g. the PSK file's identities); None: no such ids
    protected_client_id: Callable[[str], bool] | None = None
