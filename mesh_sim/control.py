"""The control plane during the collection window, on the product's own MQTT-SN objects.

Every node runs a real :class:`mqttsn.ClientSession`; its datagrams cross the mesh hop by hop as
link-ACKed unicast frames (6LoWPAN-style fragments when larger than a frame) to its root, whose
real :class:`firmware_proto.relay.RelayCore` wraps them (forwarder encapsulation) for the real
:class:`mqttsn.Gateway`; the broker is :class:`mqttsn.testing.MemoryBroker`. Each node connects and
publishes "I want artifact X" at QoS 1; the root's group is whoever's request reached the broker
by the end of the window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from heapq import heappop, heappush

from firmware_proto.relay import RelayCore
from mqttsn import (
    BrokerAction,
    BrokerDisconnect,
    BrokerSubscribe,
    BrokerUnsubscribe,
    ClientSession,
    Connected,
    Gateway,
    GatewayConfig,
    PublishAcked,
    topic_matches,
    unwrap,
    wrap,
)
from mqttsn.testing import MemoryBroker

from .clock import EventClock
from .election import MeshTree
from .radio import Radio

__all__ = ["WANT_TOPIC", "ControlPlane"]

WANT_TOPIC = "meshota/want/{artifact}"
UPLINK_LATENCY = 0.005


class IndexedBroker(MemoryBroker):
    """:class:`MemoryBroker` that routes a publish only over connections holding a subscription
    (10,000 connected nodes that never subscribe cost nothing per publish)."""

    def __init__(self) -> None:
        super().__init__()
        self._subscribed: dict[Hashable, None] = {}  # insertion-ordered, like ``subscriptions``

    def _run(self, gw: Gateway, a: BrokerAction, now: float) -> None:
        super()._run(gw, a, now)
        if isinstance(a, BrokerSubscribe | BrokerUnsubscribe | BrokerDisconnect):
            if self.subscriptions.get(a.conn):
                self._subscribed[a.conn] = None
            else:
                self._subscribed.pop(a.conn, None)

    def route(self, gw: Gateway, topic: str, payload: bytes, qos: int, now: float) -> None:
        for conn in list(self._subscribed):
            subs = self.subscriptions.get(conn, {})
            best = max((q for flt, q in subs.items() if topic_matches(flt, topic)), default=-1)
            if best >= 0:
                gw.broker_message(conn, topic, payload, min(qos, best), False, now)


class ControlPlane:
    def __init__(self, clock: EventClock, radio: Radio, tree: MeshTree, artifact: str) -> None:
        self.clock = clock
        self.radio = radio
        self.tree = tree
        self.topic = WANT_TOPIC.format(artifact=artifact)
        # the simulated nodes are trusted keyless clients behind a few roots: no keyless caps
        self.gateway = Gateway(GatewayConfig(
            retry_interval=10.0, max_retries=8, max_unverified_sessions=10**9,
            max_unverified_per_source=10**9, unverified_connect_rate=math.inf,
            unverified_connect_rate_per_source=math.inf,
        ))  # fmt: skip
        self.broker = IndexedBroker()
        self.relays = {r: RelayCore() for r in tree.roots}
        self.sessions: dict[int, ClientSession] = {}
        self.acked: dict[int, float] = {}
        self._timer_at: dict[Hashable, float] = {}
        # the sessions' and the gateway's timers wait here, the clock holding one wake-up for the
        # earliest: 10,000 sessions' keep-alive timers (an hour out) stay off the clock's heap,
        # which every event of the run pops from
        self._timers: list[tuple[float, int, Hashable]] = []
        self._timer_seq = 0
        self._wake_at = math.inf
        self.on_acked: Callable[[int], None] | None = None  # the node learned of the deployment

    def start(self, spread: float) -> None:
        """Nodes wake up spread over ``spread`` seconds, connect, and ask for the artifact."""
        n = self.radio.topo.n
        wakes: list[tuple[float, int]] = []
        for v in range(n):
            if self.tree.parent[v] < 0 and v not in self.relays:
                continue
            # Tretry above the round trip of a deep, busy mesh (no retransmission storm near the root)
            retry = max(10.0, 1.5 * self.tree.depth[v])
            s = ClientSession(f"n{v}", keep_alive=3600, retry_interval=retry, max_retries=8)
            self.sessions[v] = s
            wakes.append((spread * v / n, v))
        self.gateway.start(self.clock.now)
        # one wake-up on the clock at a time, the next armed as one runs (not 10,000 up front)
        self._wakes = iter(wakes)
        self._next_wake()

    def _next_wake(self) -> None:
        nxt = next(self._wakes, None)
        if nxt is not None:
            self.clock.at(nxt[0], self._begin, nxt[1])

    def _begin(self, v: int) -> None:
        self._next_wake()
        s = self.sessions[v]
        s.connect(self.clock.now)
        self._pump_node(v)

    # -- node side --------------------------------------------------------------------------------
    def _pump_node(self, v: int) -> None:
        s = self.sessions[v]
        now = self.clock.now
        for e in s.events():
            if isinstance(e, Connected):
                s.publish(self.topic, f"n{v}".encode(), 1, now=now)
            elif isinstance(e, PublishAcked) and e.return_code == 0 and v not in self.acked:
                self.acked[v] = now
                if self.on_acked is not None:
                    self.on_acked(v)
        root = self.tree.root_of[v]
        for d in s.datagrams_to_send(now):
            path = self.tree.path_to_root(v)
            self._carry(path, len(d), lambda r=root, d=d: self._at_root(r, v, d))  # type: ignore[misc]
        self._arm(v, s.get_timer())

    def _arm(self, key: Hashable, at: float | None) -> None:
        if at is None or self._timer_at.get(key) == at:
            return
        self._timer_at[key] = at
        self._timer_seq += 1
        heappush(self._timers, (at, self._timer_seq, key))
        if at < self._wake_at:
            self._wake_at = at
            self.clock.at(at, self._wake, at)

    def _wake(self, at: float) -> None:
        """The earliest timer is due: run every one due now, in the order they were armed."""
        if at != self._wake_at:
            return  # an earlier wake-up was armed after this one and ran
        now = self.clock.now
        timers = self._timers
        while timers and timers[0][0] <= now:
            self._timer(heappop(timers)[2])
        self._wake_at = math.inf
        if timers:
            self._wake_at = timers[0][0]
            self.clock.at(self._wake_at, self._wake, self._wake_at)

    def _timer(self, key: Hashable) -> None:
        now = self.clock.now
        if key == "gw":
            t = self.gateway.get_timer()
            if t is not None and t <= now:
                self.gateway.handle_timer(now)
            self._pump_gateway()
            return
        assert isinstance(key, int)
        s = self.sessions[key]
        t = s.get_timer()
        if t is not None and t <= now:
            s.handle_timer(now)
        self._pump_node(key)

    def _carry(self, path: list[int], size: int, arrived: Callable[[], None]) -> None:
        """Hop by hop as link-ACKed unicast datagrams (6LoWPAN fragments if large) in clock time
        (:meth:`Radio.send_path`); a datagram that exhausts its MAC retries on a hop is lost (the
        session's retransmission covers it)."""

        def done(ok: bool) -> None:
            if ok:
                arrived()

        self.radio.send_path(path, size, done, kind="control")

    # -- root relay and server side -----------------------------------------------------------------
    def _at_root(self, root: int, child: int, datagram: bytes) -> None:
        relay = self.relays[root]
        relay.from_child(child, datagram, self.clock.now)
        for wrapped in relay.datagrams_to_gateway():
            self.clock.after(UPLINK_LATENCY, self._at_gateway, root, wrapped)

    def _at_gateway(self, root: int, data: bytes) -> None:
        peer, inner = unwrap(data, ("root", root))
        self.gateway.receive_datagram(inner, peer, self.clock.now)
        self._pump_gateway()

    def _pump_gateway(self) -> None:
        now = self.clock.now
        self.broker.process(self.gateway, now)
        for peer, data in self.gateway.datagrams_to_send():
            addr, wrapped = wrap(peer, data)
            if isinstance(addr, tuple) and addr[0] == "root":
                self.clock.after(UPLINK_LATENCY, self._from_gateway, addr[1], wrapped)
        self.gateway.events()
        self._arm("gw", self.gateway.get_timer())

    def _from_gateway(self, root: int, data: bytes) -> None:
        relay = self.relays[root]
        relay.from_gateway(data, self.clock.now)
        for child, inner in relay.datagrams_to_children():
            assert isinstance(child, int)
            path = list(reversed(self.tree.path_to_root(child)))
            self._carry(path, len(inner), lambda c=child, d=inner: self._deliver(c, d))  # type: ignore[misc]

    def _deliver(self, v: int, data: bytes) -> None:
        self.sessions[v].receive_datagram(data, self.clock.now)
        self._pump_node(v)

    def group(self) -> set[int]:
        """Nodes whose request reached the broker."""
        return {int(r.payload[1:]) for r in self.broker.messages(self.topic)}
