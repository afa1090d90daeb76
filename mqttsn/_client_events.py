"""Events a :class:`~mqttsn.ClientSession` hands to its driver.

Frozen, slotted dataclasses; ``ClientSession.events()`` drains them in the order they happened.
Return codes are :class:`~mqttsn.ReturnCode` when known, else the raw octet.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._packets import TopicIdType

__all__ = [
    "ClientEvent",
    "Connected",
    "ConnectionLost",
    "ConnectionRefused",
    "Disconnected",
    "GatewayFound",
    "MessageReceived",
    "PingResponse",
    "ProtocolViolation",
    "PublishAcked",
    "Registered",
    "Subscribed",
    "Unsubscribed",
    "WakeCompleted",
    "WillUpdated",
]


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """Base of every client session event."""


@dataclass(frozen=True, slots=True)
class Connected(ClientEvent):
    """CONNACK accepted: the session is ACTIVE."""

    return_code: int


@dataclass(frozen=True, slots=True)
class ConnectionRefused(ClientEvent):
    """CONNACK with a non-zero return code: the session is DISCONNECTED again."""

    return_code: int


@dataclass(frozen=True, slots=True)
class Registered(ClientEvent):
    """REGACK for a REGISTER we sent (explicit, or automatic before a PUBLISH)."""

    topic: str
    topic_id: int
    msg_id: int
    return_code: int


@dataclass(frozen=True, slots=True)
class PublishAcked(ClientEvent):
    """End of an outbound QoS 1 (PUBACK) or QoS 2 (PUBCOMP) publish.

    Also reported with a non-zero ``return_code`` when the gateway rejects a publish with a
    PUBACK error (any QoS; ``msg_id`` is 0 for QoS 0) or when its automatic REGISTER failed.
    """

    msg_id: int
    return_code: int


@dataclass(frozen=True, slots=True)
class MessageReceived(ClientEvent):
    """An inbound PUBLISH, delivered once per QoS 2 message and at least once for QoS 1.

    ``topic`` is None when the topic id is not known to this session.
    """

    topic: str | None
    topic_id: int
    topic_id_type: TopicIdType
    payload: bytes
    qos: int
    retain: bool
    dup: bool


@dataclass(frozen=True, slots=True)
class Subscribed(ClientEvent):
    """SUBACK. ``topic`` is what was passed to ``subscribe``; ``topic_id`` is 0 for wildcards."""

    msg_id: int
    topic: str | int
    topic_id: int
    qos: int
    return_code: int


@dataclass(frozen=True, slots=True)
class Unsubscribed(ClientEvent):
    msg_id: int


@dataclass(frozen=True, slots=True)
class PingResponse(ClientEvent):
    """PINGRESP to one of our PINGREQs while ACTIVE (explicit ``ping()`` or keep-alive)."""


@dataclass(frozen=True, slots=True)
class WakeCompleted(ClientEvent):
    """PINGRESP after a wake-up: every buffered message has been received; ASLEEP again."""


@dataclass(frozen=True, slots=True)
class Disconnected(ClientEvent):
    """The gateway sent DISCONNECT.

    ``duration`` is the sleep duration when this answers our ``sleep()`` (state ASLEEP), None for
    a plain disconnect or a gateway-initiated one (state DISCONNECTED).
    """

    duration: int | None


@dataclass(frozen=True, slots=True)
class ConnectionLost(ClientEvent):
    """No answer after every retransmission (including keep-alive PINGREQs): the gateway is gone."""

    reason: str


@dataclass(frozen=True, slots=True)
class GatewayFound(ClientEvent):
    """ADVERTISE (``duration`` set, ``gw_add`` empty) or GWINFO (``duration`` None)."""

    gw_id: int
    gw_add: bytes
    duration: int | None


@dataclass(frozen=True, slots=True)
class WillUpdated(ClientEvent):
    """WILLTOPICRESP (``kind == "topic"``) or WILLMSGRESP (``kind == "message"``)."""

    kind: str
    return_code: int


@dataclass(frozen=True, slots=True)
class ProtocolViolation(ClientEvent):
    """A datagram was dropped: undecodable, or a packet a gateway never sends to a client."""

    reason: str
