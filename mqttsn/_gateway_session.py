"""State of one MQTT-SN client as the gateway sees it (v1.2 §6.14 client states)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from . import _packets as p
from ._gateway_events import WillSpec
from ._topics import TopicRegistry

if TYPE_CHECKING:
    from ._gateway_config import GatewayConfig

__all__ = ["BrokerReceipt", "GatewaySession", "Inflight", "OutboundMessage", "SessionState"]


class SessionState(Enum):
    WAIT_WILL_TOPIC = "wait-will-topic"
    WAIT_WILL_MSG = "wait-will-msg"
    WAIT_BROKER = "wait-broker"
    ACTIVE = "active"
    ASLEEP = "asleep"
    AWAKE = "awake"


class BrokerReceipt:
    """A QoS 1/2 broker message the broker is owed an acknowledgement for (``BrokerAck``):
    ``pending`` nodes still have to take it; ``done`` names those that did."""

    __slots__ = ("ack", "conn", "done", "orphaned", "pending")

    def __init__(self, conn: Hashable, ack: Hashable) -> None:
        self.conn = conn
        self.ack = ack
        self.pending = 0
        self.done: set[str] = set()
        self.orphaned = False  # a node it went to was lost: held for a new subscriber, not acked


@dataclass(slots=True)
class OutboundMessage:
    """A broker message waiting to be delivered to the client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    receipt: BrokerReceipt | None = None


@dataclass(slots=True)
class Inflight:
    """The one packet toward the client that waits for an answer (stop-and-wait)."""

    packet: p.Register | p.Publish | p.Pubrel
    sent_at: float
    retries: int = 0
    message: OutboundMessage | None = None


class GatewaySession:
    __slots__ = (
        "_msg_id",
        "clean_session",
        "client_id",
        "conn",
        "identity",
        "inflight",
        "keep_alive",
        "known_to_client",
        "last_rx",
        "peer",
        "pending_in",
        "qos2_in",
        "queue",
        "recent_acked",
        "scheduled",
        "short_subs",
        "sleep_buffer",
        "sleep_duration",
        "state",
        "subscriptions",
        "topics",
        "will",
    )

    def __init__(
        self,
        peer: Hashable,
        client_id: str,
        keep_alive: int,
        clean_session: bool,
        now: float,
        max_topics: int,
        identity: str | None,
        conn: Hashable | None = None,
    ) -> None:
        self.peer = peer
        # the broker connection key: stays when the session moves to another peer (wake-up)
        self.conn: Hashable = peer if conn is None else conn
        self.client_id = client_id
        self.keep_alive = keep_alive
        self.clean_session = clean_session
        self.identity = identity
        self.state = SessionState.WAIT_BROKER
        self.last_rx = now
        self.will: WillSpec | None = None
        self.topics = TopicRegistry(max_topics)
        self.known_to_client: set[int] = set()
        self.subscriptions: dict[str, int] = {}
        self.short_subs: set[str] = set()
        self.pending_in: set[int] = set()  # client msg ids forwarded, broker ack pending
        self.qos2_in: dict[int, str] = {}  # msg id -> "forwarding" | "received"
        self.recent_acked: OrderedDict[int, None] = OrderedDict()
        self.queue: deque[OutboundMessage] = deque()
        self.inflight: Inflight | None = None
        self.sleep_buffer: deque[OutboundMessage] = deque()
        self.sleep_duration = 0
        self.scheduled: float | None = None
        self._msg_id = 0

    def next_msg_id(self) -> int:
        self._msg_id = self._msg_id % 0xFFFF + 1
        return self._msg_id

    def remember_acked(self, msg_id: int) -> None:
        """Keep the last QoS 1 ids acked, so a DUP retransmission is not forwarded twice."""
        self.recent_acked[msg_id] = None
        self.recent_acked.move_to_end(msg_id)
        while len(self.recent_acked) > 32:
            self.recent_acked.popitem(last=False)

    def supervision_deadline(self, cfg: GatewayConfig) -> float | None:
        if self.state == SessionState.ASLEEP:
            return self.last_rx + cfg.keep_alive_factor * self.sleep_duration
        if self.state in (SessionState.ACTIVE, SessionState.AWAKE) and self.keep_alive > 0:
            return self.last_rx + cfg.keep_alive_factor * self.keep_alive
        return None

    def next_deadline(self, cfg: GatewayConfig) -> float | None:
        if self.state in (SessionState.WAIT_WILL_TOPIC, SessionState.WAIT_WILL_MSG, SessionState.WAIT_BROKER):
            return self.last_rx + cfg.retry_interval * cfg.max_retries
        deadline = self.supervision_deadline(cfg)
        if self.inflight is not None:
            retry = self.inflight.sent_at + cfg.retry_interval
            deadline = retry if deadline is None else min(deadline, retry)
        return deadline

    def __repr__(self) -> str:
        return f"GatewaySession({self.client_id!r} at {self.peer!r}, {self.state.value})"
