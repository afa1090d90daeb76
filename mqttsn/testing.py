"""Testing helpers shipped with the package (like ``trio.testing``): no sockets, no real time.

- :class:`MemoryBroker`: an in-memory MQTT broker that answers a :class:`~mqttsn.Gateway`'s
  broker actions (connections, wills, subscriptions with wildcards, QoS downgrade).
- :class:`LossyLink`: drops datagrams with a seeded probability.
- :class:`Network`: clients and one gateway wired through lossy links on a virtual clock.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

from ._gateway import Gateway
from ._gateway_events import (
    BrokerAck,
    BrokerAction,
    BrokerConnect,
    BrokerDisconnect,
    BrokerPublish,
    BrokerSubscribe,
    BrokerUnsubscribe,
    WillSpec,
)
from ._topics import topic_matches

__all__ = ["BrokerRecord", "LossyLink", "MemoryBroker", "Network", "SessionLike"]


@dataclass(frozen=True, slots=True)
class BrokerRecord:
    """One message as the broker received it."""

    conn: Hashable
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class MemoryBroker:
    """Just enough MQTT broker for gateway tests and simulations."""

    published: list[BrokerRecord] = field(default_factory=list)
    connections: dict[Hashable, WillSpec | None] = field(default_factory=dict)
    subscriptions: dict[Hashable, dict[str, int]] = field(default_factory=dict)
    refuse_connections: bool = False
    # QoS 1/2 messages handed to the gateway and not yet acknowledged (BrokerAck): ack -> (conn, topic)
    unacked: dict[int, tuple[Hashable, str]] = field(default_factory=dict)
    acked: list[tuple[Hashable, str]] = field(default_factory=list)
    _next_ack: int = 0

    def process(self, gw: Gateway, now: float) -> None:
        """Run every pending broker action of ``gw``, and the actions they cause."""
        while True:
            actions = gw.broker_actions()
            if not actions:
                return
            for a in actions:
                self._run(gw, a, now)

    def _run(self, gw: Gateway, a: BrokerAction, now: float) -> None:
        if isinstance(a, BrokerConnect):
            if self.refuse_connections:
                gw.broker_connected(a.conn, False, now)
                return
            self.connections[a.conn] = a.will
            self.subscriptions.setdefault(a.conn, {})
            gw.broker_connected(a.conn, True, now)
        elif isinstance(a, BrokerPublish):
            self.published.append(BrokerRecord(a.conn, a.topic, a.payload, a.qos, a.retain))
            if a.token is not None:
                gw.broker_published(a.conn, a.token, now)
            self.route(gw, a.topic, a.payload, a.qos, now)
        elif isinstance(a, BrokerSubscribe):
            self.subscriptions.setdefault(a.conn, {})[a.topic_filter] = a.qos
            gw.broker_subscribed(a.conn, a.token, a.qos, now)
        elif isinstance(a, BrokerUnsubscribe):
            self.subscriptions.get(a.conn, {}).pop(a.topic_filter, None)
            gw.broker_unsubscribed(a.conn, a.token, now)
        elif isinstance(a, BrokerDisconnect):
            self.connections.pop(a.conn, None)  # a clean disconnect discards the will
            self.subscriptions.pop(a.conn, None)
        elif isinstance(a, BrokerAck):
            assert isinstance(a.ack, int)
            entry = self.unacked.pop(a.ack)  # KeyError: acknowledged twice, or never handed over
            assert entry[0] == a.conn, f"acknowledged on {a.conn!r}, delivered on {entry[0]!r}"
            self.acked.append(entry)

    def route(self, gw: Gateway, topic: str, payload: bytes, qos: int, now: float) -> None:
        """Deliver a message to every connection with a matching subscription."""
        for conn, subs in list(self.subscriptions.items()):
            best = -1
            for flt, sub_qos in subs.items():
                if topic_matches(flt, topic):
                    best = max(best, sub_qos)
            if best >= 0:
                ack = None
                if min(qos, best) > 0:
                    self._next_ack += 1
                    ack = self._next_ack
                    self.unacked[ack] = (conn, topic)
                gw.broker_message(conn, topic, payload, min(qos, best), False, now, ack)

    def messages(self, topic: str | None = None) -> list[BrokerRecord]:
        return [r for r in self.published if topic is None or r.topic == topic]


class LossyLink:
    """Loses each datagram with probability ``loss``, decided by a seeded RNG."""

    def __init__(self, loss: float = 0.0, seed: int = 0) -> None:
        self.loss = loss
        self.rng = random.Random(seed)
        self.sent = 0
        self.lost = 0

    def passes(self) -> bool:
        self.sent += 1
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return False
        return True


class SessionLike(Protocol):
    def receive_datagram(self, data: bytes, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[bytes]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class Network:
    """Clients and a gateway exchanging datagrams over lossy links, on a virtual clock.

    Each client is attached under a peer name; datagrams take ``latency`` seconds.
    """

    def __init__(
        self,
        gateway: Gateway,
        broker: MemoryBroker | None = None,
        *,
        loss: float = 0.0,
        seed: int = 0,
        latency: float = 0.01,
    ) -> None:
        self.gateway = gateway
        self.broker = broker or MemoryBroker()
        self.link = LossyLink(loss, seed)
        self.latency = latency
        self.now = 0.0
        self.clients: dict[Hashable, SessionLike] = {}
        self._in_flight: list[tuple[float, int, Hashable, bool, bytes]] = []  # (at, seq, peer, to_gw, data)
        self._seq = 0
        self.trace: list[tuple[float, Hashable, bool, bytes]] = []

    def attach(self, peer: Hashable, client: SessionLike) -> None:
        self.clients[peer] = client

    def _queue(self, peer: Hashable, to_gw: bool, data: bytes) -> None:
        self.trace.append((self.now, peer, to_gw, data))
        if self.link.passes():
            self._seq += 1
            self._in_flight.append((self.now + self.latency, self._seq, peer, to_gw, data))

    def _collect(self) -> None:
        for peer, c in self.clients.items():
            for data in c.datagrams_to_send(self.now):
                self._queue(peer, True, data)
        self.broker.process(self.gateway, self.now)
        for peer, data in self.gateway.datagrams_to_send():
            if peer in self.clients:
                self._queue(peer, False, data)

    def next_time(self) -> float | None:
        times = [t for t, *_ in self._in_flight]
        for c in self.clients.values():
            t = c.get_timer()
            if t is not None:
                times.append(t)
        t = self.gateway.get_timer()
        if t is not None:
            times.append(t)
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next thing that happens; False when nothing is left to do."""
        self._collect()
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        due = sorted(x for x in self._in_flight if x[0] <= self.now)
        self._in_flight = [x for x in self._in_flight if x[0] > self.now]
        for _, _, peer, to_gw, data in due:
            if to_gw:
                self.gateway.receive_datagram(data, peer, self.now)
            else:
                self.clients[peer].receive_datagram(data, self.now)
        for c in self.clients.values():
            t = c.get_timer()
            if t is not None and t <= self.now:
                c.handle_timer(self.now)
        t = self.gateway.get_timer()
        if t is not None and t <= self.now:
            self.gateway.handle_timer(self.now)
        self._collect()
        return True

    def run(self, until: float) -> None:
        """Run until virtual time ``until`` (or until nothing is scheduled)."""
        while True:
            t = self.next_time()
            if t is None or t > until:
                self._collect()
                t = self.next_time()
                if t is None or t > until:
                    self.now = max(self.now, until)
                    return
            self.step()
