"""The node's MQTT-SN session inside DTLS, sans-I/O, on a virtual clock: DtlsNodeSession → RelayCore
→ DtlsFront(DtlsServer + Gateway) → MemoryBroker. No sockets, no sleeping; seeded loss."""

from __future__ import annotations

import heapq
import random
from collections.abc import Hashable

import pytest

from bridge.gateway.dtls_listener import DtlsFront, DtlsPeer
from bridge.gateway.dtls_server import DtlsServer
from firmware_proto import dtls_client as dc
from firmware_proto.aio.dtls_node import DtlsNodeSession
from firmware_proto.relay import RelayCore
from mqttsn import (
    BrokerConnect,
    ClientLost,
    ClientSession,
    ClientState,
    Connected,
    ConnectionLost,
    Gateway,
    GatewayConfig,
    MessageReceived,
    PublishAcked,
    SessionState,
    Will,
)
from mqttsn.testing import MemoryBroker
from wire.dtls_credentials import DtlsServerConfig

KEYS = {"node-1": b"\x11" * 16, "node-2": b"\x22" * 16}
RELAY = ("10.0.0.1", 47000)


class Mesh:
    """Nodes behind one relay, a DTLS gateway and a memory broker, on a virtual clock."""

    def __init__(self, *, loss: float = 0.0, seed: int = 0, idle_timeout: float = 900.0) -> None:
        self.server = DtlsServer(
            DtlsServerConfig(psk=KEYS),
            idle_timeout=idle_timeout,
            handshake_timeout_min=0.2,
            handshake_timeout_max=6.4,
        )
        self.gateway = Gateway(GatewayConfig(retry_interval=1.0))
        self.front = DtlsFront(self.server, self.gateway)
        self.broker = MemoryBroker()
        self.relay_bytes: list[bytes] = []
        self.relay = RelayCore(tap=self.relay_bytes.append)
        self.nodes: dict[Hashable, DtlsNodeSession] = {}
        self.events: dict[Hashable, list[object]] = {}
        self.gateway_events: list[object] = []
        self.now = 0.0
        self.loss = loss
        self.rng = random.Random(seed)
        self.lost = 0
        self._queue: list[tuple[float, int, str, Hashable, bytes]] = []
        self._seq = 0

    def add(
        self, child: Hashable, client_id: str, key: bytes | None = None, **session: object
    ) -> DtlsNodeSession:
        node = DtlsNodeSession(
            ClientSession(client_id, retry_interval=1.0, max_retries=8, **session),  # type: ignore[arg-type]
            dc.PskClientConfig(client_id, KEYS.get(client_id, b"\0") if key is None else key),
            handshake_timeout_min=0.2,
            handshake_timeout_max=6.4,
        )
        self.nodes[child] = node
        self.events[child] = []
        node.start(self.now)
        return node

    def _push(self, where: str, target: Hashable, data: bytes) -> None:
        radio = where in ("relay-up", "child")  # loss on the mesh radio hops; the UDP uplink is clean
        if radio and self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return
        self._seq += 1
        heapq.heappush(self._queue, (self.now + 0.005, self._seq, where, target, data))

    def _collect(self) -> None:
        for _ in range(20):
            self.broker.process(self.gateway, self.now)
            out = self.gateway.datagrams_to_send()
            for peer, data in out:
                assert isinstance(peer, DtlsPeer)
                self.front.deliver(peer, data, self.now)
            if not out and not self.front.gateway_touched:
                break
            self.front.gateway_touched = False
        self.gateway_events.extend(self.gateway.events())
        for addr, data in self.front.datagrams_to_send():
            assert addr == RELAY
            self._push("relay-down", None, data)
        for child, node in self.nodes.items():
            for data in node.datagrams_to_send(self.now):
                self._push("relay-up", child, data)
            self.events[child].extend(node.events())
        for data in self.relay.datagrams_to_gateway():
            self._push("gateway", None, data)
        for child, data in self.relay.datagrams_to_children():
            self._push("child", child, data)

    def _timers(self) -> list[float]:
        times = [t for n in self.nodes.values() if (t := n.get_timer()) is not None]
        times += [t for t in (self.front.get_timer(), self.gateway.get_timer()) if t is not None]
        return times

    def run(self, until: float) -> None:
        self._collect()
        while True:
            times = self._timers()
            if self._queue:
                times.append(self._queue[0][0])
            at = min(times, default=None)
            if at is None or at > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, at)
            if self._queue and self._queue[0][0] <= self.now:
                _, _, where, target, data = heapq.heappop(self._queue)
                if where == "relay-up":
                    self.relay.from_child(target, data, self.now)
                elif where == "relay-down":
                    self.relay.from_gateway(data, self.now)
                elif where == "gateway":
                    self.front.receive_datagram(data, RELAY, self.now)
                elif target in self.nodes:
                    self.nodes[target].receive_datagram(data, self.now)
            else:
                for node in self.nodes.values():
                    t = node.get_timer()
                    if t is not None and t <= self.now:
                        node.handle_timer(self.now)
                t = self.front.get_timer()
                if t is not None and t <= self.now:
                    self.front.handle_timer(self.now)
                t = self.gateway.get_timer()
                if t is not None and t <= self.now:
                    self.gateway.handle_timer(self.now)
            self._collect()

    def of(self, child: Hashable, kind: type) -> list[object]:
        return [e for e in self.events[child] if isinstance(e, kind)]


def connect(mesh: Mesh, child: Hashable, until: float = 30.0) -> None:
    node = mesh.nodes[child]
    mesh.run(mesh.now + until) if not node.established else None
    assert node.established, mesh.events[child]
    node.session.connect(mesh.now)
    mesh.run(mesh.now + until)
    assert node.session.state is ClientState.ACTIVE, mesh.events[child]


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_publish_and_receive_through_relay_identity_stamped(loss: float) -> None:
    mesh = Mesh(loss=loss, seed=11)
    node = mesh.add(7, "node-1")
    connect(mesh, 7, until=60)
    node.session.subscribe("fw/node-1/#", 1, now=mesh.now)
    node.session.publish("dev/node-1/status", b"SECRET-UPLINK", 1, now=mesh.now)
    mesh.run(mesh.now + 60)
    (record,) = mesh.broker.messages("dev/node-1/status")
    assert record.payload == b"SECRET-UPLINK" and isinstance(record.conn, DtlsPeer)
    mesh.broker.route(mesh.gateway, "fw/node-1/cmd", b"SECRET-DOWNLINK", 1, mesh.now)
    mesh.run(mesh.now + 60)
    got = {e.payload for e in mesh.of(7, MessageReceived)}  # type: ignore[attr-defined]
    assert got == {b"SECRET-DOWNLINK"} and mesh.of(7, PublishAcked)  # QoS 1: at least once
    (sess,) = mesh.gateway.sessions()
    assert sess.identity == "node-1" and sess.client_id == "node-1"
    handled = b"".join(mesh.relay_bytes)
    assert b"SECRET" not in handled and b"fw/node-1" not in handled
    if loss:
        assert mesh.lost > 0


def test_same_seed_same_trace() -> None:
    def trace(seed: int) -> tuple[int, float, list[str]]:
        mesh = Mesh(loss=0.2, seed=seed)
        mesh.add(1, "node-1")
        connect(mesh, 1, until=60)
        return mesh.lost, mesh.now, [type(e).__name__ for e in mesh.events[1]]

    assert trace(5) == trace(5)


def test_dtls_close_marks_session_lost_then_fresh_handshake_reconnects() -> None:
    mesh = Mesh()
    node = mesh.add(3, "node-1", will=Will("dev/node-1/will", b"gone"))
    connect(mesh, 3)
    (peer,) = [s.peer for s in mesh.gateway.sessions()]
    assert isinstance(peer, DtlsPeer)
    mesh.front.close_session(peer, "operator closed it", mesh.now)  # close_notify to the node
    mesh.run(mesh.now + 5)
    assert node.session.state is ClientState.LOST
    assert any("DTLS session ended" in e.reason for e in mesh.of(3, ConnectionLost))  # type: ignore[attr-defined]
    lost = [e for e in mesh.gateway_events if isinstance(e, ClientLost)]
    assert lost and lost[0].will_published and mesh.broker.messages("dev/node-1/will")
    assert mesh.gateway.sessions() == []
    node.start(mesh.now)  # a new DTLS session, then CONNECT again
    connect(mesh, 3)
    assert len(mesh.of(3, Connected)) == 2


def test_sleeping_session_outlives_its_dtls_session() -> None:
    mesh = Mesh(idle_timeout=60.0)
    node = mesh.add(4, "node-1")
    connect(mesh, 4)
    node.session.subscribe("fw/node-1/#", 1, now=mesh.now)
    mesh.run(mesh.now + 5)
    node.session.sleep(600, mesh.now)
    mesh.run(mesh.now + 5)
    assert node.session.state is ClientState.ASLEEP
    mesh.run(mesh.now + 120)  # the gateway's DTLS idle timeout passes; MQTT-SN sleep does not
    assert mesh.server.session_count == 0
    (sess,) = mesh.gateway.sessions()
    assert sess.state is SessionState.ASLEEP
    mesh.broker.route(mesh.gateway, "fw/node-1/cmd", b"while-asleep", 1, mesh.now)
    node.restart(mesh.now)  # the node knows its DTLS session is stale after a long sleep
    mesh.run(mesh.now + 10)
    node.session.wake(mesh.now)
    mesh.run(mesh.now + 10)
    assert [e.payload for e in mesh.of(4, MessageReceived)] == [b"while-asleep"]  # type: ignore[attr-defined]


def test_wrong_key_never_reaches_the_gateway_and_other_device_takes_over_peer() -> None:
    mesh = Mesh()
    bad = mesh.add(9, "node-2", key=b"\x99" * 16)
    mesh.run(30)
    assert not bad.established and any(
        isinstance(e, dc.HandshakeFailed | dc.SessionClosed) for e in mesh.events[9]
    )
    assert mesh.gateway.sessions() == [] and not mesh.broker.connections
    # node-1 connects at child 5, sleeps; node-2 then shows up at the very same child address
    first = mesh.add(5, "node-1")
    connect(mesh, 5)
    first.session.sleep(600, mesh.now)
    mesh.run(mesh.now + 5)
    first.close(mesh.now)
    mesh.run(mesh.now + 5)
    assert [s.client_id for s in mesh.gateway.sessions()] == ["node-1"]  # asleep, kept
    second = mesh.add(5, "node-2")
    connect(mesh, 5)
    assert second.session.state is ClientState.ACTIVE
    assert [(s.client_id, s.identity) for s in mesh.gateway.sessions()] == [("node-2", "node-2")]
    connects = [c for c in mesh.gateway_events if isinstance(c, ClientLost)]
    assert connects and connects[0].client_id == "node-1"


def test_broker_connect_carries_identity() -> None:
    mesh = Mesh()
    mesh.add(1, "node-1")
    mesh.run(10)
    mesh.nodes[1].session.connect(mesh.now)
    seen: list[BrokerConnect] = []
    real = mesh.gateway.broker_actions

    def spy() -> list[object]:
        actions = real()
        seen.extend(a for a in actions if isinstance(a, BrokerConnect))
        return actions  # type: ignore[return-value]

    mesh.gateway.broker_actions = spy  # type: ignore[method-assign,assignment]
    mesh.run(mesh.now + 10)
    assert [(c.client_id, c.identity) for c in seen] == [("node-1", "node-1")]


def test_an_mqtt_sn_datagram_over_the_record_room_is_dropped_and_the_session_stays_up() -> None:
    """A PUBLISH bigger than one DTLS record under the MTU is dropped (counted), never written to
    mbedTLS, so the DTLS session and the MQTT-SN session keep working for the next message."""
    mesh = Mesh()
    node = mesh.add(7, "node-1")
    connect(mesh, 7)
    node.session.publish("dev/node-1/big", bytes(1300), 0, now=mesh.now)
    node.session.publish("dev/node-1/small", b"after", 0, now=mesh.now)
    mesh.run(mesh.now + 5)
    assert node.oversized == 1 and node.established
    assert mesh.broker.messages("dev/node-1/big") == []
    (record,) = mesh.broker.messages("dev/node-1/small")
    assert record.payload == b"after" and node.session.state is ClientState.ACTIVE
