"""Ack after the node's ack: a QoS 1/2 message from the broker is acknowledged to the broker
(``BrokerAck``) only once the node has it, in both modes (sans-I/O, in-memory broker)."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from mqttsn import (
    GATEWAY_CONN,
    Connack,
    Connect,
    Disconnect,
    Gateway,
    GatewayConfig,
    Packet,
    Pingreq,
    Puback,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    ReturnCode,
    Subscribe,
    decode,
    encode,
)
from mqttsn.testing import MemoryBroker

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)
C = ("10.0.0.3", 3000)


class World:
    def __init__(self, mode: str, **cfg: object) -> None:
        self.gw = Gateway(GatewayConfig(mode=mode, **cfg))  # type: ignore[arg-type]
        self.broker = MemoryBroker()
        self.now = 0.0

    def send(self, peer: Hashable, pkt: Packet) -> list[Packet]:
        self.gw.receive_datagram(encode(pkt), peer, self.now)
        return self.flush(peer)

    def flush(self, peer: Hashable) -> list[Packet]:
        self.broker.process(self.gw, self.now)
        self.gw.events()
        return [decode(d) for p, d in self.gw.datagrams_to_send() if p == peer]

    def advance(self, dt: float, peer: Hashable) -> list[Packet]:
        end, out = self.now + dt, []
        while (t := self.gw.get_timer()) is not None and t <= end:
            self.now = max(self.now, t)
            self.gw.handle_timer(self.now)
            out.extend(self.flush(peer))
        self.now = end
        return out

    def subscriber(self, peer: Hashable, client_id: str, qos: int, topic: str = "sn/t") -> int:
        self.send(peer, Connect(client_id, 0))
        (ack,) = self.send(peer, Subscribe(1, topic, qos))
        return int(ack.topic_id)  # type: ignore[attr-defined]


@pytest.fixture(params=["transparent", "aggregating"])
def w(request: pytest.FixtureRequest) -> World:
    return World(request.param)


def test_qos1_acked_to_the_broker_only_after_the_node_puback(w: World) -> None:
    w.subscriber(A, "n1", 1)
    w.broker.route(w.gw, "sn/t", b"m", 1, w.now)
    (pub,) = w.flush(A)
    assert isinstance(pub, Publish) and pub.qos == 1
    assert len(w.broker.unacked) == 1 and w.broker.acked == []
    (again,) = w.advance(10.5, A)  # retransmitted, still not acked at the broker
    assert isinstance(again, Publish) and again.dup and len(w.broker.unacked) == 1
    w.send(A, Puback(pub.topic_id, pub.msg_id))
    assert w.broker.unacked == {} and [t for _, t in w.broker.acked] == ["sn/t"]


def test_qos2_acked_when_the_node_sends_pubrec(w: World) -> None:
    w.subscriber(A, "n1", 2)
    w.broker.route(w.gw, "sn/t", b"m", 2, w.now)
    (pub,) = w.flush(A)
    assert isinstance(pub, Publish) and pub.qos == 2 and w.broker.unacked
    assert w.send(A, Pubrec(pub.msg_id)) == [Pubrel(pub.msg_id)]
    assert w.broker.unacked == {} and len(w.broker.acked) == 1


def test_invalid_topic_id_reregisters_and_acks_only_after_the_second_delivery(w: World) -> None:
    w.subscriber(A, "n1", 1, "sn/#")
    w.broker.route(w.gw, "sn/x", b"m", 1, w.now)
    (reg,) = w.flush(A)
    assert isinstance(reg, Register)
    (pub,) = w.send(A, Regack(reg.topic_id, reg.msg_id))
    assert isinstance(pub, Publish)
    (reg2,) = w.send(A, Puback(pub.topic_id, pub.msg_id, ReturnCode.INVALID_TOPIC_ID))
    assert isinstance(reg2, Register) and w.broker.unacked
    (pub2,) = w.send(A, Regack(reg2.topic_id, reg2.msg_id))
    assert isinstance(pub2, Publish)
    w.send(A, Puback(pub2.topic_id, pub2.msg_id))
    assert w.broker.unacked == {}


def test_transparent_node_that_never_acks_leaves_the_message_unacked_at_the_broker() -> None:
    w = World("transparent")
    w.subscriber(A, "n1", 1)
    w.broker.route(w.gw, "sn/t", b"m", 1, w.now)
    w.flush(A)
    w.advance(100, A)  # N_RETRY retransmissions, then the client is lost
    assert w.gw.session(A) is None
    # never acknowledged: the broker keeps it in n1's session and redelivers on resume
    assert len(w.broker.unacked) == 1 and w.broker.acked == []


def test_aggregating_lost_node_message_held_for_the_next_subscriber() -> None:
    w = World("aggregating")
    w.subscriber(A, "n1", 1)
    w.broker.route(w.gw, "sn/t", b"m", 1, w.now)
    w.flush(A)
    w.advance(100, A)
    assert w.gw.session(A) is None and len(w.broker.unacked) == 1
    # the node comes back (or another subscribes) within the hold: it gets the message
    w.send(B, Connect("n1", 0))
    ack, pub = w.send(B, Subscribe(1, "sn/t", 1))  # SUBACK, then the held message
    assert isinstance(pub, Publish) and pub.topic_id == ack.topic_id and pub.data == b"m"  # type: ignore[attr-defined]
    assert len(w.broker.unacked) == 1
    w.send(B, Puback(pub.topic_id, pub.msg_id))
    assert w.broker.unacked == {}


def test_aggregating_message_without_subscriber_held_then_acked_when_the_hold_ends() -> None:
    w = World("aggregating", unrouted_hold=30.0)
    w.subscriber(A, "n1", 1)
    w.send(A, Disconnect())  # gone: the broker subscription is released
    # a message redelivered after a restart, before any node subscribed again
    w.broker.process(w.gw, w.now)
    w.gw.broker_message(GATEWAY_CONN, "sn/t", b"late", 1, False, w.now, 99)
    w.broker.unacked[99] = (GATEWAY_CONN, "sn/t")
    w.flush(A)
    assert 99 in w.broker.unacked
    w.advance(31, A)
    assert w.broker.unacked == {} and w.gw.stats["unrouted"] == 1


def test_aggregating_hold_is_capped() -> None:
    w = World("aggregating", max_unrouted=2)
    for ack in (1, 2, 3):
        w.broker.unacked[ack] = (GATEWAY_CONN, "sn/t")
        w.gw.broker_message(GATEWAY_CONN, "sn/t", b"x", 1, False, w.now, ack)
    w.flush(A)
    assert sorted(w.broker.unacked) == [2, 3]  # the oldest acknowledged (dropped) to make room


def test_aggregating_fan_out_acked_after_every_subscriber() -> None:
    w = World("aggregating")
    w.subscriber(A, "n1", 1)
    w.subscriber(B, "n2", 2)
    w.subscriber(C, "n3", 0)
    w.broker.route(w.gw, "sn/t", b"m", 2, w.now)
    out = [(peer, decode(d)) for peer, d in w.gw.datagrams_to_send()]
    assert [peer for peer, _ in out] == [A, B, C]
    pa, pb = out[0][1], out[1][1]
    assert isinstance(pa, Publish) and isinstance(pb, Publish)
    w.send(A, Puback(pa.topic_id, pa.msg_id))
    assert len(w.broker.unacked) == 1
    w.send(B, Pubrec(pb.msg_id))
    assert w.broker.unacked == {}


def test_sleep_buffer_overflow_acks_the_dropped_message(w: World) -> None:
    w.gw.config.max_buffered = 1
    w.subscriber(A, "n1", 1)
    w.send(A, Disconnect(60))
    w.broker.route(w.gw, "sn/t", b"1", 1, w.now)
    w.broker.route(w.gw, "sn/t", b"2", 1, w.now)
    w.flush(A)
    assert len(w.broker.unacked) == 1  # the buffered one waits for the node
    (pub,) = w.send(A, Pingreq("n1"))
    assert isinstance(pub, Publish) and pub.data == b"1"
    w.send(A, Puback(pub.topic_id, pub.msg_id))
    assert w.broker.unacked == {}


def test_message_resent_before_the_connack_is_delivered_once_connected() -> None:
    """A resumed broker session resends what it had in flight right after its CONNACK, which
    may reach the gateway before the connection's own answer does."""
    w = World("transparent")
    w.gw.receive_datagram(encode(Connect("n1", 0, clean_session=False)), A, w.now)
    (connect,) = w.gw.broker_actions()
    w.gw.broker_message(connect.conn, "sn/t", b"again", 1, False, w.now, 5)
    w.broker.unacked[5] = (connect.conn, "sn/t")
    assert w.gw.datagrams_to_send() == []  # no CONNACK yet: nothing goes out
    w.gw.broker_connected(connect.conn, True, w.now)
    connack, reg = w.flush(A)
    assert isinstance(connack, Connack)
    assert isinstance(reg, Register) and reg.topic_name == "sn/t"
    (pub,) = w.send(A, Regack(reg.topic_id, reg.msg_id))
    assert isinstance(pub, Publish) and pub.data == b"again"
    w.send(A, Puback(pub.topic_id, pub.msg_id))
    assert w.broker.unacked == {}
