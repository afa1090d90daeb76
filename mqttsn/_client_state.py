"""Client session states, the transition and command tables, the Will and the counters.

``TRANSITIONS`` and ``COMMAND_STATES`` are the whole state machine of :class:`ClientSession`; a
script can draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ._errors import LocalProtocolError
from ._packets import WillTopic

__all__ = ["COMMAND_STATES", "ONLINE", "TRANSITIONS", "ClientState", "ClientStats", "Will"]


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    message: bytes
    qos: int = 0
    retain: bool = False

    def __post_init__(self) -> None:
        WillTopic(self.topic, self.qos, self.retain)  # validates topic text and qos 0..2
        if not self.topic:
            raise LocalProtocolError("a will needs a non-empty topic")
        if not isinstance(self.message, bytes):
            raise LocalProtocolError("will message must be bytes")


class ClientState(Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ASLEEP = "asleep"
    AWAKE = "awake"
    LOST = "lost"


_S = ClientState
ONLINE = frozenset({_S.CONNECTING, _S.ACTIVE, _S.ASLEEP, _S.AWAKE})

# (state, trigger) -> next state. Triggers: commands (connect, wake) and gateway answers
# (connack, refused, slept, woken, disconnected) or retry exhaustion (lost).
TRANSITIONS: dict[tuple[ClientState, str], ClientState] = {
    **{(s, "connect"): _S.CONNECTING for s in (_S.DISCONNECTED, _S.LOST, _S.ASLEEP, _S.AWAKE)},
    (_S.CONNECTING, "connack"): _S.ACTIVE,
    (_S.CONNECTING, "refused"): _S.DISCONNECTED,
    (_S.ACTIVE, "slept"): _S.ASLEEP,
    (_S.ASLEEP, "slept"): _S.ASLEEP,  # a new sleep duration
    (_S.ASLEEP, "wake"): _S.AWAKE,
    (_S.AWAKE, "woken"): _S.ASLEEP,
    **{(s, "disconnected"): _S.DISCONNECTED for s in ONLINE},
    **{(s, "lost"): _S.LOST for s in ONLINE},
}

# States in which each command may be called. A QoS -1 publish and search_gateway() work in
# every state; every command but connect() is refused once sleep()/disconnect() is queued.
COMMAND_STATES: dict[str, frozenset[ClientState]] = {
    "connect": frozenset({_S.DISCONNECTED, _S.LOST, _S.ASLEEP, _S.AWAKE}),
    "register": frozenset({_S.ACTIVE}),
    "publish": frozenset({_S.ACTIVE}),
    "subscribe": frozenset({_S.ACTIVE}),
    "unsubscribe": frozenset({_S.ACTIVE}),
    "ping": frozenset({_S.ACTIVE}),
    "update_will": frozenset({_S.ACTIVE}),
    "sleep": frozenset({_S.ACTIVE, _S.ASLEEP}),
    "wake": frozenset({_S.ASLEEP}),
    "disconnect": frozenset({_S.ACTIVE, _S.ASLEEP, _S.AWAKE}),
}


@dataclass(slots=True)
class ClientStats:
    datagrams_in: int = 0
    datagrams_out: int = 0
    decode_errors: int = 0  # undecodable datagrams (dropped)
    violations: int = 0  # decodable packets a gateway never sends to a client (dropped)
    ignored: int = 0  # valid packets matching nothing in flight, e.g. a late duplicate ack
    retransmissions: int = 0
    duplicates: int = 0  # inbound QoS 2 PUBLISH seen again before PUBREL (acked, not delivered)
