"""The sans-I/O gateway driven with hand-built packets and the in-memory broker (no sockets)."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from mqttsn import (
    BROADCAST,
    GATEWAY_CONN,
    Advertise,
    BrokerConnect,
    ClientAsleep,
    ClientLost,
    Connack,
    Connect,
    DatagramDropped,
    DecodeError,
    Disconnect,
    Encapsulated,
    ForwardedPeer,
    Gateway,
    GatewayConfig,
    GwInfo,
    LocalProtocolError,
    Packet,
    PacketRefused,
    Pingreq,
    Pingresp,
    PredefinedTopics,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    ReturnCode,
    SearchGw,
    Suback,
    Subscribe,
    TopicIdType,
    Unsuback,
    Unsubscribe,
    WillMsg,
    WillMsgReq,
    WillMsgResp,
    WillMsgUpd,
    WillTopic,
    WillTopicReq,
    WillTopicResp,
    WillTopicUpd,
    decode,
    encode,
    short_topic_id,
    unwrap,
    wrap,
)
from mqttsn.testing import MemoryBroker

PREDEF = PredefinedTopics.parse("*, sn/predef/one, 1\n*, sn/predef/two, 2\nc9, sn/only/c9, 7\n")


class Harness:
    def __init__(self, **cfg: object) -> None:
        cfg.setdefault("predefined", PREDEF)
        self.gw = Gateway(GatewayConfig(**cfg))  # type: ignore[arg-type]
        self.broker = MemoryBroker()
        self.now = 0.0
        self.events: list[object] = []

    def send(self, peer: Hashable, pkt: Packet | bytes) -> list[Packet]:
        data = pkt if isinstance(pkt, bytes) else encode(pkt)
        self.gw.receive_datagram(data, peer, self.now)
        return self.flush(peer)

    def flush(self, peer: Hashable | None = None) -> list[Packet]:
        self.broker.process(self.gw, self.now)
        self.events.extend(self.gw.events())
        out = self.gw.datagrams_to_send()
        return [decode(d) for p, d in out if peer is None or p == peer]

    def advance(self, dt: float, peer: Hashable | None = None) -> list[Packet]:
        """Advance the clock, firing every timer on the way; returns datagrams to ``peer``."""
        end = self.now + dt
        out: list[Packet] = []
        while True:
            t = self.gw.get_timer()
            if t is None or t > end:
                break
            self.now = max(self.now, t)
            self.gw.handle_timer(self.now)
            out.extend(self.flush(peer))
        self.now = end
        return out

    def connect(self, peer: Hashable, client_id: str, duration: int = 30) -> None:
        assert self.send(peer, Connect(client_id, duration)) == [Connack(ReturnCode.ACCEPTED)]

    def register(self, peer: Hashable, topic: str, msg_id: int = 1) -> int:
        (ack,) = self.send(peer, Register(0, msg_id, topic))
        assert isinstance(ack, Regack) and ack.return_code == ReturnCode.ACCEPTED
        return ack.topic_id


A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


@pytest.fixture(params=["transparent", "aggregating"])
def h(request: pytest.FixtureRequest) -> Harness:
    return Harness(mode=request.param)


def test_connect_and_publish_all_qos(h: Harness) -> None:
    h.connect(A, "c1")
    tid = h.register(A, "sn/a")
    assert h.send(A, Publish(tid, b"zero", 0)) == []
    assert h.send(A, Publish(tid, b"one", 1, 5)) == [Puback(tid, 5)]
    assert h.send(A, Publish(tid, b"two", 2, 6)) == [Pubrec(6)]
    assert h.send(A, Pubrel(6)) == [Pubcomp(6)]
    assert [(r.topic, r.payload, r.qos) for r in h.broker.published] == [
        ("sn/a", b"zero", 0),
        ("sn/a", b"one", 1),
        ("sn/a", b"two", 2),
    ]


def test_transparent_mode_opens_one_broker_connection_per_client_with_will() -> None:
    h = Harness(mode="transparent")
    assert h.send(A, Connect("willy", 10, will=True)) == [WillTopicReq()]
    assert h.send(A, WillTopic("sn/will", 1, True)) == [WillMsgReq()]
    # The gateway answers CONNACK only after the broker accepted the MQTT connection.
    h.gw.receive_datagram(encode(WillMsg(b"gone")), A, h.now)
    actions = h.gw.broker_actions()
    assert len(actions) == 1 and isinstance(actions[0], BrokerConnect)
    assert actions[0].client_id == "willy" and actions[0].will is not None
    assert actions[0].will.topic == "sn/will" and actions[0].will.message == b"gone"
    assert h.gw.datagrams_to_send() == []
    h.gw.broker_connected(A, True, h.now)
    assert [decode(d) for _, d in h.gw.datagrams_to_send()] == [Connack()]


def test_broker_refusing_connection_gives_connack_rejection() -> None:
    h = Harness(mode="transparent")
    h.broker.refuse_connections = True
    (ack,) = h.send(A, Connect("c1", 10))
    assert isinstance(ack, Connack) and ack.return_code != ReturnCode.ACCEPTED
    assert h.gw.session(A) is None


def test_qos1_dup_redelivery_is_not_forwarded_twice(h: Harness) -> None:
    h.connect(A, "c1")
    tid = h.register(A, "sn/a")
    assert h.send(A, Publish(tid, b"x", 1, 9)) == [Puback(tid, 9)]
    # our PUBACK was lost; the client retransmits with DUP
    assert h.send(A, Publish(tid, b"x", 1, 9, dup=True)) == [Puback(tid, 9)]
    assert len(h.broker.messages("sn/a")) == 1


def test_qos2_duplicates_forwarded_exactly_once(h: Harness) -> None:
    h.connect(A, "c1")
    tid = h.register(A, "sn/a")
    assert h.send(A, Publish(tid, b"x", 2, 3)) == [Pubrec(3)]
    assert h.send(A, Publish(tid, b"x", 2, 3, dup=True)) == [Pubrec(3)]
    assert h.send(A, Pubrel(3)) == [Pubcomp(3)]
    assert h.send(A, Pubrel(3)) == [Pubcomp(3)]
    assert len(h.broker.messages("sn/a")) == 1


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_to_unknown_topic_id_gets_invalid_topic_and_is_never_forwarded(h: Harness, qos: int) -> None:
    h.connect(A, "c1")
    assert h.send(A, Publish(42, b"x", qos, 7 if qos else 0)) == [
        Puback(42, 7 if qos else 0, ReturnCode.INVALID_TOPIC_ID)
    ]
    assert h.send(A, Publish(99, b"x", qos, 8, topic_id_type=TopicIdType.PREDEFINED)) == [
        Puback(99, 8, ReturnCode.INVALID_TOPIC_ID)
    ]
    assert h.broker.published == []
    assert any(isinstance(e, PacketRefused) for e in h.events)


def test_qos_minus_one_needs_no_connection(h: Harness) -> None:
    assert h.send(A, Publish(1, b"p", -1, topic_id_type=TopicIdType.PREDEFINED)) == []
    assert h.send(A, Publish(short_topic_id("zz"), b"s", -1, topic_id_type=TopicIdType.SHORT)) == []
    assert [(r.conn, r.topic, r.qos) for r in h.broker.published] == [
        (GATEWAY_CONN, "sn/predef/one", 0),
        (GATEWAY_CONN, "zz", 0),
    ]
    # a per-client predefined id is not known to an anonymous sender
    assert h.send(A, Publish(7, b"p", -1, topic_id_type=TopicIdType.PREDEFINED)) == []
    assert len(h.broker.published) == 2


def test_per_client_predefined_topics(h: Harness) -> None:
    h.connect(A, "c9")
    assert h.send(A, Publish(7, b"mine", 1, 1, topic_id_type=TopicIdType.PREDEFINED)) == [Puback(7, 1)]
    h.connect(B, "other")
    assert h.send(B, Publish(7, b"no", 1, 1, topic_id_type=TopicIdType.PREDEFINED)) == [
        Puback(7, 1, ReturnCode.INVALID_TOPIC_ID)
    ]
    assert [r.topic for r in h.broker.published] == ["sn/only/c9"]


def test_wildcard_subscription_registers_before_publish_and_retransmits(h: Harness) -> None:
    h.connect(A, "c1")
    assert h.send(A, Subscribe(1, "sn/in/#", 1)) == [Suback(0, 1, 1)]
    h.broker.route(h.gw, "sn/in/x", b"hello", 1, h.now)
    (reg,) = h.flush(A)
    assert isinstance(reg, Register) and reg.topic_name == "sn/in/x"
    (pub,) = h.send(A, Regack(reg.topic_id, reg.msg_id))
    assert isinstance(pub, Publish) and pub.topic_id == reg.topic_id and pub.data == b"hello"
    assert pub.qos == 1 and not pub.dup
    # no PUBACK: the gateway retransmits with DUP after T_RETRY (the reference gateway does not)
    (again,) = h.advance(10.5, A)
    assert isinstance(again, Publish) and again.dup and again.msg_id == pub.msg_id
    assert h.send(A, Puback(pub.topic_id, pub.msg_id)) == []
    # a second message on the same topic needs no REGISTER
    h.broker.route(h.gw, "sn/in/x", b"again", 0, h.now)
    (pub2,) = h.flush(A)
    assert isinstance(pub2, Publish) and pub2.topic_id == reg.topic_id and pub2.qos == 0


def test_outbound_qos2_flow(h: Harness) -> None:
    h.connect(A, "c1")
    (ack,) = h.send(A, Subscribe(1, "sn/q2", 2))
    assert isinstance(ack, Suback) and ack.topic_id != 0 and ack.qos == 2
    h.broker.route(h.gw, "sn/q2", b"once", 2, h.now)
    (pub,) = h.flush(A)
    assert isinstance(pub, Publish) and pub.qos == 2 and pub.topic_id == ack.topic_id
    assert h.send(A, Pubrec(pub.msg_id)) == [Pubrel(pub.msg_id)]
    (again,) = h.advance(10.5, A)  # PUBCOMP lost: PUBREL retransmitted
    assert again == Pubrel(pub.msg_id)
    assert h.send(A, Pubcomp(pub.msg_id)) == []
    assert h.gw.session(A) is not None and h.gw.session(A).inflight is None  # type: ignore[union-attr]


def test_predefined_and_short_subscriptions(h: Harness) -> None:
    h.connect(A, "c1")
    assert h.send(A, Subscribe(1, 2, 0, topic_id_type=TopicIdType.PREDEFINED)) == [Suback(2, 1, 0)]
    assert h.send(A, Subscribe(2, "ab", 0, topic_id_type=TopicIdType.SHORT)) == [
        Suback(short_topic_id("ab"), 2, 0)
    ]
    assert h.send(A, Subscribe(3, 55, 0, topic_id_type=TopicIdType.PREDEFINED)) == [
        Suback(0, 3, 0, ReturnCode.INVALID_TOPIC_ID)
    ]
    h.broker.route(h.gw, "sn/predef/two", b"p", 0, h.now)
    h.broker.route(h.gw, "ab", b"s", 0, h.now)
    assert h.flush(A) == [
        Publish(2, b"p", 0, topic_id_type=TopicIdType.PREDEFINED),
        Publish(short_topic_id("ab"), b"s", 0, topic_id_type=TopicIdType.SHORT),
    ]
    assert h.send(A, Unsubscribe(4, 2, TopicIdType.PREDEFINED)) == [Unsuback(4)]
    h.broker.route(h.gw, "sn/predef/two", b"p", 0, h.now)
    assert h.flush(A) == []


def test_aggregating_mode_shares_one_broker_subscription() -> None:
    h = Harness(mode="aggregating")
    h.connect(A, "c1")
    h.connect(B, "c2")
    h.send(A, Subscribe(1, "t/#", 1))
    h.send(B, Subscribe(1, "t/#", 0))
    assert list(h.broker.subscriptions[GATEWAY_CONN]) == ["t/#"]
    assert h.broker.connections.keys() <= {GATEWAY_CONN}
    h.broker.route(h.gw, "t/x", b"m", 1, h.now)
    out = h.flush()
    assert sum(isinstance(p, Register) for p in out) == 2
    assert h.send(A, Unsubscribe(2, "t/#")) == [Unsuback(2)]
    assert "t/#" in h.broker.subscriptions[GATEWAY_CONN]  # B still subscribed
    h.send(B, Disconnect())
    assert "t/#" not in h.broker.subscriptions[GATEWAY_CONN]


def test_keep_alive_expiry_publishes_will(h: Harness) -> None:
    assert h.send(A, Connect("w", 10, will=True)) == [WillTopicReq()]
    assert h.send(A, WillTopic("sn/will/w", 1)) == [WillMsgReq()]
    assert h.send(A, WillMsg(b"w died")) == [Connack()]
    h.advance(14.0)
    assert h.broker.messages("sn/will/w") == []
    h.advance(1.5)  # 1.5 x 10 s after the last packet
    (will,) = h.broker.messages("sn/will/w")
    assert will.payload == b"w died" and will.qos == 1
    lost = [e for e in h.events if isinstance(e, ClientLost)]
    assert lost and lost[0].will_published
    assert h.gw.session(A) is None


def test_clean_disconnect_does_not_publish_will(h: Harness) -> None:
    h.send(A, Connect("w", 10, will=True))
    h.send(A, WillTopic("sn/will/w"))
    h.send(A, WillMsg(b"x"))
    assert h.send(A, Disconnect()) == [Disconnect()]
    h.advance(100)
    assert h.broker.messages("sn/will/w") == []


def test_will_update(h: Harness) -> None:
    h.send(A, Connect("w", 10, will=True))
    h.send(A, WillTopic("sn/will/a"))
    h.send(A, WillMsg(b"a"))
    assert h.send(A, WillTopicUpd("sn/will/b", 0)) == [WillTopicResp()]
    assert h.send(A, WillMsgUpd(b"b")) == [WillMsgResp()]
    h.advance(16)
    assert [(r.topic, r.payload) for r in h.broker.published] == [("sn/will/b", b"b")]


def test_sleeping_client_gets_buffered_messages_then_pingresp(h: Harness) -> None:
    h.connect(A, "sleepy")
    (ack,) = h.send(A, Subscribe(1, "sn/cmd", 1))
    assert isinstance(ack, Suback)
    assert h.send(A, Disconnect(60)) == [Disconnect()]
    assert any(isinstance(e, ClientAsleep) for e in h.events)
    for i in range(3):
        h.broker.route(h.gw, "sn/cmd", f"m{i}".encode(), 1, h.now)
    assert h.flush(A) == []  # nothing goes to a sleeping client
    h.advance(30)
    out = h.send(A, Pingreq("sleepy"))
    assert len(out) == 1 and isinstance(out[0], Publish) and out[0].data == b"m0"
    got = [out[0].data]
    while True:
        (nxt,) = h.send(A, Puback(out[0].topic_id, out[-1].msg_id))  # type: ignore[union-attr]
        if isinstance(nxt, Pingresp):
            break
        assert isinstance(nxt, Publish)
        got.append(nxt.data)
        out = [nxt]
    assert got == [b"m0", b"m1", b"m2"]
    # back asleep: a new message is buffered again, and an empty wake gives PINGRESP at once
    h.broker.route(h.gw, "sn/cmd", b"later", 0, h.now)
    assert h.flush(A) == []
    p1, p2 = h.send(A, Pingreq("sleepy"))
    # QoS 0 needs no ack: PINGRESP follows the PUBLISH at once
    assert isinstance(p1, Publish) and p1.data == b"later" and p2 == Pingresp()


def test_wake_at_new_address_and_sleep_expiry(h: Harness) -> None:
    h.connect(A, "sleepy")
    h.send(A, Disconnect(20))
    assert h.send(B, Pingreq("sleepy")) == [Pingresp()]
    assert h.gw.session(B) is not None and h.gw.session(A) is None
    h.advance(31)  # 1.5 x sleep duration without a word
    assert h.gw.session(B) is None


def test_connect_resumes_sleeping_session_and_flushes(h: Harness) -> None:
    h.connect(A, "s")
    h.send(A, Subscribe(1, "sn/x", 0))
    h.send(A, Disconnect(100))
    h.broker.route(h.gw, "sn/x", b"queued", 0, h.now)
    out = h.send(A, Connect("s", 30, clean_session=False))
    assert out[0] == Connack() and isinstance(out[1], Publish) and out[1].data == b"queued"


def test_oversize_datagram_refused_with_puback_and_logged(h: Harness) -> None:
    h.connect(A, "big")
    tid = h.register(A, "sn/big")
    limit = h.gw.config.max_packet_size
    ok = Publish(tid, b"x" * (limit - 9), 1, 1)
    assert len(encode(ok)) == limit
    assert h.send(A, ok) == [Puback(tid, 1)]
    too_big = Publish(tid, b"x" * (limit - 8), 1, 2)
    assert h.send(A, too_big) == [Puback(tid, 2, ReturnCode.NOT_SUPPORTED)]
    drops = [e for e in h.events if isinstance(e, DatagramDropped)]
    assert drops and "oversize" in drops[0].reason and drops[0].peer == A
    assert len(h.broker.messages("sn/big")) == 1
    assert h.gw.stats["oversize"] == 1


def test_garbage_is_dropped_and_other_sessions_unaffected(h: Harness) -> None:
    h.connect(A, "good")
    tid = h.register(A, "sn/good")
    for junk in (b"", b"\x00", b"\x05\x0c\x00", b"\xff" * 40, b"\x03\xee\x00", b"\x01\x00\x03\x0c"):
        assert h.send(B, junk) == []
    assert h.send(A, b"\x07\x0d\x00") == []  # malformed from a connected client
    assert h.send(A, Publish(tid, b"still fine", 1, 3)) == [Puback(tid, 3)]
    assert h.gw.stats["dropped"] >= 7


def test_packet_without_session_gets_disconnect(h: Harness) -> None:
    assert h.send(A, Publish(1, b"x", 1, 1)) == [Disconnect()]
    assert h.send(A, Register(0, 1, "t")) == [Disconnect()]


def test_identity_binding_refuses_other_client_id() -> None:
    h = Harness(mode="aggregating")
    h.gw.receive_datagram(encode(Connect("mallory", 10)), A, 0.0, identity="dev-1")
    assert [decode(d) for _, d in h.gw.datagrams_to_send()] == [Disconnect()]
    assert h.gw.session(A) is None
    h.gw.receive_datagram(encode(Connect("dev-1", 10)), A, 0.0, identity="dev-1")
    assert [decode(d) for _, d in h.gw.datagrams_to_send()] == [Connack()]
    s = h.gw.session(A)
    assert s is not None and s.identity == "dev-1"


def test_searchgw_and_advertise() -> None:
    h = Harness(gw_id=7, advertise_interval=900.0)
    h.gw.start(0.0)
    out = h.gw.datagrams_to_send()
    assert out == [(BROADCAST, encode(Advertise(7, 900)))]
    assert h.send(A, SearchGw(1)) == [GwInfo(7)]
    h.gw.datagrams_to_send()
    h.now = 899.0
    assert h.gw.get_timer() == 900.0
    h.gw.handle_timer(900.0)
    assert h.gw.datagrams_to_send() == [(BROADCAST, encode(Advertise(7, 900)))]


def test_client_stops_answering_gateway_gives_up_and_publishes_will(h: Harness) -> None:
    h.send(A, Connect("w", 0, will=True))  # no keep-alive: only retransmission exhaustion
    h.send(A, WillTopic("sn/will/x"))
    h.send(A, WillMsg(b"bye"))
    h.send(A, Subscribe(1, "sn/y", 1))
    h.broker.route(h.gw, "sn/y", b"m", 1, h.now)
    assert len(h.flush(A)) == 1  # PUBLISH (topic known from SUBACK)
    resent = h.advance(100, A)
    assert len(resent) == 5 and all(isinstance(p, Publish) and p.dup for p in resent)
    assert [r.topic for r in h.broker.messages("sn/will/x")] == ["sn/will/x"]


def test_forwarder_encapsulation_roundtrip() -> None:
    h = Harness()
    inner = encode(Connect("fwdnode1", 10))
    datagram = encode(Encapsulated(b"4660", inner))
    assert datagram.hex() == "07fe0034363630" + inner.hex()
    peer, data = unwrap(datagram, ("10.1.1.1", 5000))
    assert peer == ForwardedPeer(("10.1.1.1", 5000), b"4660") and data == inner
    h.gw.receive_datagram(data, peer, 0.0)
    h.broker.process(h.gw, 0.0)
    ((to, reply),) = h.gw.datagrams_to_send()
    addr, out = wrap(to, reply)
    assert addr == ("10.1.1.1", 5000)
    assert decode(out) == Encapsulated(b"4660", encode(Connack()))
    with pytest.raises(DecodeError):
        unwrap(bytes([3, 0xFE, 0]), ("x", 1))
    # reserved Ctrl bits set: not an encapsulation (a DTLS record looks like this: 0xFE, 0xFD)
    odd = bytes([3, 0xFE, 0x04]) + inner
    assert unwrap(odd, ("x", 1)) == (("x", 1), odd)
    # a DTLS record relayed inside an encapsulation is handed on as the inner bytes
    dtls_record = bytes([23, 0xFE, 0xFD]) + bytes(10)
    assert unwrap(encode(Encapsulated(b"n1", dtls_record)), ("x", 1)) == (
        ForwardedPeer(("x", 1), b"n1"),
        dtls_record,
    )


def test_predefined_file_errors_name_the_line() -> None:
    with pytest.raises(LocalProtocolError, match="f:2"):
        PredefinedTopics.parse("*, a/b, 1\n*, a/c\n", "f")
    with pytest.raises(LocalProtocolError, match="not a number"):
        PredefinedTopics.parse("*, a/b, x\n", "f")
    with pytest.raises(LocalProtocolError, match="twice"):
        PredefinedTopics.parse("*, a/b, 1\n*, a/c, 1\n", "f")
    with pytest.raises(LocalProtocolError, match="wildcards"):
        PredefinedTopics.parse("*, a/+, 1\n", "f")
    t = PredefinedTopics.parse("# comment\n\n*, a/b, 0x10  # trailing comment\n")
    assert t.name_for(None, 16) == "a/b"
