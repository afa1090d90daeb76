"""Our client session against our gateway session over a seeded lossy link: no sockets, virtual time."""

from __future__ import annotations

import hashlib

import pytest

from mqttsn import (
    ClientSession,
    ClientState,
    Connected,
    Gateway,
    GatewayConfig,
    MessageReceived,
    PublishAcked,
    Subscribed,
    WakeCompleted,
    Will,
)
from mqttsn.testing import MemoryBroker, Network

PEER = ("10.0.0.5", 4000)


def make(loss: float, seed: int, mode: str = "transparent") -> tuple[Network, ClientSession]:
    gw = Gateway(GatewayConfig(mode=mode, retry_interval=5.0, max_retries=12))  # type: ignore[arg-type]
    net = Network(gw, MemoryBroker(), loss=loss, seed=seed)
    c = ClientSession("pair-1", keep_alive=600, retry_interval=5.0, max_retries=12)
    net.attach(PEER, c)
    return net, c


def connect(net: Network, c: ClientSession) -> list[object]:
    c.connect(net.now)
    events: list[object] = []
    for _ in range(10_000):
        net.step()
        events.extend(c.events())
        if c.state == ClientState.ACTIVE:
            return events
    raise AssertionError("never connected")


def run_until(net: Network, c: ClientSession, done: object, limit: float = 5000.0) -> list[object]:
    events: list[object] = []
    while net.now < limit:
        if not net.step():
            break
        events.extend(c.events())
        if callable(done) and done(events):
            return events
    return events


@pytest.mark.parametrize("mode", ["transparent", "aggregating"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_qos2_exactly_once_and_qos1_at_least_once_upstream_under_loss(mode: str, seed: int) -> None:
    net, c = make(loss=0.2, seed=seed, mode=mode)
    assert any(isinstance(e, Connected) for e in connect(net, c))
    ids2 = [c.publish("up/q2", f"m{i}".encode(), 2, now=net.now) for i in range(30)]
    ids1 = [c.publish("up/q1", f"n{i}".encode(), 1, now=net.now) for i in range(30)]
    want = set(ids2) | set(ids1)
    events = run_until(net, c, lambda ev: want <= {e.msg_id for e in ev if isinstance(e, PublishAcked)})
    acked = [e for e in events if isinstance(e, PublishAcked)]
    assert {e.msg_id for e in acked} >= want and all(e.return_code == 0 for e in acked)
    assert net.link.lost > 0  # the link really lost datagrams
    q2 = [r.payload for r in net.broker.messages("up/q2")]
    assert q2 == [f"m{i}".encode() for i in range(30)]  # exactly once, in order
    q1 = {r.payload for r in net.broker.messages("up/q1")}
    assert q1 == {f"n{i}".encode() for i in range(30)}  # at least once


@pytest.mark.parametrize("seed", [4, 5])
def test_qos2_exactly_once_downstream_under_loss(seed: int) -> None:
    net, c = make(loss=0.2, seed=seed)
    connect(net, c)
    c.subscribe("down/#", 2, now=net.now)
    run_until(net, c, lambda ev: any(isinstance(e, Subscribed) for e in ev))
    for i in range(25):
        net.broker.route(net.gateway, f"down/{i % 3}", f"d{i}".encode(), 2, net.now)
    events = run_until(net, c, lambda ev: sum(isinstance(e, MessageReceived) for e in ev) >= 25, limit=20000)
    # let any stray retransmissions play out, then count
    events += run_until(net, c, lambda ev: False, limit=net.now + 300)
    got = [e.payload for e in events if isinstance(e, MessageReceived)]
    assert got == [f"d{i}".encode() for i in range(25)]
    assert [e.topic for e in events if isinstance(e, MessageReceived)][:3] == ["down/0", "down/1", "down/2"]


def test_sleep_and_wake_under_loss() -> None:
    net, c = make(loss=0.15, seed=9)
    connect(net, c)
    c.subscribe("cmd", 1, now=net.now)
    run_until(net, c, lambda ev: any(isinstance(e, Subscribed) for e in ev))
    c.sleep(300, net.now)
    run_until(net, c, lambda ev: c.state == ClientState.ASLEEP)
    assert c.state == ClientState.ASLEEP
    for i in range(4):
        net.broker.route(net.gateway, "cmd", f"c{i}".encode(), 1, net.now)
    net.run(net.now + 100)
    assert [e for e in c.events() if isinstance(e, MessageReceived)] == []
    c.wake(net.now)
    events = run_until(net, c, lambda ev: any(isinstance(e, WakeCompleted) for e in ev))
    received = [e for e in events if isinstance(e, MessageReceived)]
    # QoS 1 is at-least-once: a lost PUBACK brings a DUP retransmission; order is kept
    assert list(dict.fromkeys(e.payload for e in received)) == [b"c0", b"c1", b"c2", b"c3"]
    firsts = {e.payload for e in received if not e.dup}
    assert firsts == {b"c0", b"c1", b"c2", b"c3"} and len(firsts) == 4
    assert c.state == ClientState.ASLEEP


def test_lost_client_will_reaches_broker() -> None:
    gw = Gateway(GatewayConfig(retry_interval=5.0))
    net = Network(gw, MemoryBroker())
    c = ClientSession("w", keep_alive=20, will=Will("will/w", b"gone", 1))
    net.attach(PEER, c)
    connect(net, c)
    del net.clients[PEER]  # the node loses power: no more pings
    net.run(net.now + 31)
    assert [(r.topic, r.payload) for r in net.broker.messages("will/w")] == [("will/w", b"gone")]


def _trace_hash(seed: int) -> str:
    net, c = make(loss=0.25, seed=seed)
    connect(net, c)
    for i in range(10):
        c.publish("t", bytes([i]), 2, now=net.now)
    run_until(net, c, lambda ev: sum(isinstance(e, PublishAcked) for e in ev) >= 10)
    h = hashlib.sha256()
    for at, peer, to_gw, data in net.trace:
        h.update(f"{at:.6f}|{peer}|{to_gw}|".encode() + data)
    return h.hexdigest()


def test_same_seed_same_trace() -> None:
    assert _trace_hash(7) == _trace_hash(7)
    assert _trace_hash(7) != _trace_hash(8)
