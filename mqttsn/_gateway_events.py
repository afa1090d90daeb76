"""What the sans-I/O gateway asks of the MQTT broker side, and what it reports.

Broker actions are instructions for the driver that owns the MQTT connections. ``conn`` names
the MQTT connection: a session's conn key in transparent mode (one broker connection per
MQTT-SN client; the peer key the session was created at, kept when a sleeper wakes at another
address, or a :class:`SessionConn` when that key was taken), or :data:`GATEWAY_CONN` for the
gateway's own connection (all traffic in aggregating mode; QoS -1 publishes in transparent mode).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GATEWAY_CONN",
    "BroadcastPeer",
    "BrokerAck",
    "BrokerAction",
    "BrokerConnect",
    "BrokerDisconnect",
    "BrokerPublish",
    "BrokerSubscribe",
    "BrokerUnsubscribe",
    "ClientAsleep",
    "ClientAwake",
    "ClientConnected",
    "ClientDisconnected",
    "ClientLost",
    "DatagramDropped",
    "GatewayEvent",
    "PacketRefused",
    "SessionConn",
    "WillSpec",
]


class _GatewayConn:
    __slots__ = ()

    def __repr__(self) -> str:
        return "GATEWAY_CONN"


GATEWAY_CONN: Final = _GatewayConn()


class BroadcastPeer:
    """Destination of ADVERTISE: the driver sends it to its multicast group, if it has one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BROADCAST"


BROADCAST: Final = BroadcastPeer()


@dataclass(frozen=True, slots=True)
class SessionConn:
    """A session's broker connection key when its peer key was taken: a sleeper that woke at a
    new address keeps its broker connection under its first peer key, and a new session at that
    old peer gets one of these instead (``serial`` makes it unique)."""

    peer: Hashable
    serial: int


@dataclass(frozen=True, slots=True)
class WillSpec:
    topic: str
    message: bytes
    qos: int = 0
    retain: bool = False


# --- broker actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerConnect:
    """Open an MQTT connection for one MQTT-SN client (transparent mode).

    Answer with ``Gateway.broker_connected(conn, ok, now)``. ``identity`` is the verified
    transport identity (DTLS), when there is one.
    """

    conn: Hashable
    client_id: str
    keep_alive: int
    clean_session: bool
    will: WillSpec | None
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerPublish:
    """Publish on ``conn``. When ``token`` is set, answer ``Gateway.broker_published``.

    ``device`` is the identity the gateway stamps on the message (the driver sends it as the
    MQTT 5 user property ``meshota-device``): the DTLS-verified identity when the session has
    one (``verified`` True), else the MQTT-SN client id (``verified`` False). ``None`` when no
    session sent it (QoS -1 without a session): nothing is stamped.
    """

    conn: Hashable
    topic: str
    payload: bytes
    qos: int
    retain: bool
    token: int | None = None
    device: str | None = None
    verified: bool = False


@dataclass(frozen=True, slots=True)
class BrokerSubscribe:
    """Subscribe on ``conn``; answer ``Gateway.broker_subscribed(conn, token, granted, now)``."""

    conn: Hashable
    topic_filter: str
    qos: int
    token: int


@dataclass(frozen=True, slots=True)
class BrokerUnsubscribe:
    """Unsubscribe on ``conn``; answer ``Gateway.broker_unsubscribed(conn, token, now)``."""

    conn: Hashable
    topic_filter: str
    token: int


@dataclass(frozen=True, slots=True)
class BrokerDisconnect:
    """Close ``conn`` cleanly (the broker then discards the will registered with it)."""

    conn: Hashable


@dataclass(frozen=True, slots=True)
class BrokerAck:
    """Acknowledge to the broker the QoS 1/2 message ``broker_message`` was given ``ack`` for.

    Emitted once every node the message went to has it (its PUBACK, or PUBREC at QoS 2) or it was
    dropped for good (the node refused it, a sleeper's buffer was full). A message whose node is
    lost is never acknowledged in transparent mode: it stays in the node's broker session and is
    redelivered when the node resumes it. ``ack`` is the driver's own handle, passed back as is.
    """

    conn: Hashable
    ack: Hashable


BrokerAction = (
    BrokerConnect | BrokerPublish | BrokerSubscribe | BrokerUnsubscribe | BrokerDisconnect | BrokerAck
)


# --- events for logs and metrics ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatagramDropped:
    """A datagram that could not be used at all (malformed, oversized, no session)."""

    peer: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class PacketRefused:
    """A valid packet refused with an answer to the client (e.g. PUBACK invalid topic id)."""

    peer: Hashable
    client_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ClientConnected:
    peer: Hashable
    client_id: str


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    peer: Hashable
    client_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ClientLost:
    peer: Hashable
    client_id: str
    reason: str
    will_published: bool


@dataclass(frozen=True, slots=True)
class ClientAsleep:
    peer: Hashable
    client_id: str
    duration: int


@dataclass(frozen=True, slots=True)
class ClientAwake:
    peer: Hashable
    client_id: str
    buffered: int


GatewayEvent = (
    DatagramDropped
    | PacketRefused
    | ClientConnected
    | ClientDisconnected
    | ClientLost
    | ClientAsleep
    | ClientAwake
)
