"""Sans-I/O MQTT-SN client session against a scripted fake gateway (hand-built packets, no sockets).

Time is a plain float the tests advance; ``Gw.run_until`` fires the session's timers in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttsn import (
    Advertise,
    ClientEvent,
    ClientSession,
    ClientState,
    Connack,
    Connect,
    Connected,
    ConnectionLost,
    ConnectionRefused,
    Disconnect,
    Disconnected,
    GatewayFound,
    GwInfo,
    LocalProtocolError,
    MessageReceived,
    Packet,
    Pingreq,
    Pingresp,
    PingResponse,
    ProtocolViolation,
    Puback,
    Pubcomp,
    Publish,
    PublishAcked,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    Registered,
    ReturnCode,
    SearchGw,
    Suback,
    Subscribe,
    Subscribed,
    TopicIdType,
    Unsuback,
    Unsubscribe,
    Unsubscribed,
    WakeCompleted,
    Will,
    WillMsg,
    WillMsgReq,
    WillMsgResp,
    WillMsgUpd,
    WillTopic,
    WillTopicReq,
    WillTopicResp,
    WillTopicUpd,
    WillUpdated,
    decode,
    encode,
)


class Gw:
    """A scripted gateway: reads what the client sent, answers with hand-built packets."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("keep_alive", 60)
        self.c = ClientSession("c1", **kwargs)
        self.now = 0.0

    def sent(self) -> list[Packet]:
        return [decode(d) for d in self.c.datagrams_to_send(self.now)]

    def one(self) -> Packet:
        out = self.sent()
        assert len(out) == 1, out
        return out[0]

    def feed(self, *packets: Packet) -> None:
        for p in packets:
            self.c.receive_datagram(encode(p), self.now)

    def events(self) -> list[ClientEvent]:
        return self.c.events()

    def run_until(self, t: float) -> None:
        while (timer := self.c.get_timer()) is not None and timer <= t:
            self.now = max(self.now, timer)
            self.c.handle_timer(self.now)
        self.now = t

    def connected(self) -> Gw:
        self.c.connect(self.now)
        assert isinstance(self.one(), Connect)
        self.feed(Connack(ReturnCode.ACCEPTED))
        assert self.events() == [Connected(ReturnCode.ACCEPTED)]
        return self


def state(g: Gw) -> ClientState:
    """The state through a call, so mypy does not narrow it across commands."""
    return g.c.state


def connected(**kwargs: Any) -> Gw:
    return Gw(**kwargs).connected()


# ---------------------------------------------------------------------------- connect


def test_connect_without_will_golden_bytes() -> None:
    g = Gw()
    assert state(g) is ClientState.DISCONNECTED
    g.c.connect(0.0)
    assert state(g) is ClientState.CONNECTING
    assert g.c.datagrams_to_send(0.0) == [bytes.fromhex("08 04 04 01 00 3c 63 31")]
    g.feed(Connack(0))
    assert g.events() == [Connected(ReturnCode.ACCEPTED)]
    assert state(g) is ClientState.ACTIVE


def test_connect_with_will_gateway_driven_exchange() -> None:
    g = Gw(will=Will("dev/c1/status", b"offline", qos=1, retain=True), clean_session=False)
    g.c.connect(0.0)
    assert g.one() == Connect("c1", 60, clean_session=False, will=True)
    g.feed(WillTopicReq())
    assert g.one() == WillTopic("dev/c1/status", 1, True)
    g.feed(WillMsgReq())
    assert g.one() == WillMsg(b"offline")
    assert g.events() == []
    g.feed(Connack(0))
    assert g.events() == [Connected(0)]
    assert state(g) is ClientState.ACTIVE


def test_willtopicreq_without_will_gets_empty_willtopic() -> None:
    g = Gw()
    g.c.connect(0.0)
    g.sent()
    g.feed(WillTopicReq())
    assert g.c.datagrams_to_send(0.0) == [b"\x02\x07"]


def test_connect_refused() -> None:
    g = Gw()
    g.c.connect(0.0)
    g.sent()
    g.feed(Connack(ReturnCode.CONGESTION))
    assert g.events() == [ConnectionRefused(ReturnCode.CONGESTION)]
    assert state(g) is ClientState.DISCONNECTED
    assert g.c.get_timer() is None
    g.c.connect(1.0)  # may retry
    assert isinstance(g.one(), Connect)


def test_connect_retransmitted_then_lost() -> None:
    g = Gw(retry_interval=5, max_retries=2)
    g.c.connect(0.0)
    g.sent()
    g.run_until(10.0)
    assert g.sent() == [Connect("c1", 60), Connect("c1", 60)]
    g.run_until(15.0)
    assert g.sent() == []
    assert g.events() == [ConnectionLost("no answer to CONNECT after 3 transmissions")]
    assert state(g) is ClientState.LOST
    g.c.connect(20.0)
    assert state(g) is ClientState.CONNECTING


# ---------------------------------------------------------------------------- publish


def test_auto_register_then_publish_qos1() -> None:
    g = connected()
    mid = g.c.publish("dev/c1/temp", b"21.5", qos=1, now=1.0)
    reg = g.one()
    assert isinstance(reg, Register) and reg.topic_id == 0 and reg.topic_name == "dev/c1/temp"
    assert reg.msg_id != mid
    g.feed(Regack(7, reg.msg_id, 0))
    assert g.events() == [Registered("dev/c1/temp", 7, reg.msg_id, ReturnCode.ACCEPTED)]
    assert g.one() == Publish(7, b"21.5", qos=1, msg_id=mid)
    g.feed(Puback(7, mid, 0))
    assert g.events() == [PublishAcked(mid, ReturnCode.ACCEPTED)]
    # The id is cached: no second REGISTER.
    mid2 = g.c.publish("dev/c1/temp", b"22", qos=1, now=2.0)
    assert g.one() == Publish(7, b"22", qos=1, msg_id=mid2)
    assert g.c.topics.registered("dev/c1/temp") == 7


def test_explicit_register() -> None:
    g = connected()
    mid = g.c.register("a/b", 1.0)
    assert g.one() == Register(0, mid, "a/b")
    g.feed(Regack(3, mid, 0))
    assert g.events() == [Registered("a/b", 3, mid, 0)]
    g.c.publish("a/b", b"x", now=2.0)
    assert g.one() == Publish(3, b"x")


def test_qos0_unknown_topic_waits_for_register_known_topic_goes_now() -> None:
    g = connected()
    mid = g.c.register("known", 0.0)
    g.feed(Regack(1, mid, 0))
    g.sent()
    g.events()
    g.now = 1.0
    assert g.c.publish("new/topic", b"a", now=1.0) == 0
    reg = g.one()
    assert isinstance(reg, Register)
    g.c.publish("new/topic", b"b", now=1.0)
    assert g.sent() == []  # queued behind the REGISTER
    g.c.publish("known", b"k", now=1.0)
    assert g.sent() == [Publish(1, b"k")]  # known id: skips the queue
    g.feed(Regack(2, reg.msg_id, 0))
    assert g.sent() == [Publish(2, b"a"), Publish(2, b"b")]
    assert g.c.get_timer() == 1.0 + 60  # nothing in flight: only keep-alive


def test_qos_minus1_without_connection() -> None:
    c = ClientSession("c1", predefined={"fw/status": 5})
    assert c.publish(1, b"p", qos=-1, now=0.0) == 0
    assert c.publish("ab", b"s", qos=-1, now=0.0, short=True) == 0
    assert c.publish("fw/status", b"n", qos=-1, now=0.0) == 0
    out = c.datagrams_to_send(0.0)
    # Golden bytes from the Paho captures (reference §1.5).
    assert out[0] == bytes.fromhex("08 0c 61 00 01 00 00 70")
    assert out[1] == bytes.fromhex("08 0c 62 61 62 00 00 73")
    assert decode(out[2]) == Publish(5, b"n", -1, topic_id_type=TopicIdType.PREDEFINED)
    assert c.state is ClientState.DISCONNECTED
    assert c.get_timer() is None
    with pytest.raises(LocalProtocolError):
        c.publish("normal/topic", b"x", qos=-1, now=0.0)


def test_qos0_predefined_and_short_go_out_immediately() -> None:
    g = connected(predefined={"fw/cmd": 9})
    g.c.publish("fw/cmd", b"1", now=0.0)
    g.c.publish(9, b"2", now=0.0)
    g.c.publish("zz", b"3", now=0.0, short=True)
    assert g.sent() == [
        Publish(9, b"1", topic_id_type=TopicIdType.PREDEFINED),
        Publish(9, b"2", topic_id_type=TopicIdType.PREDEFINED),
        Publish(0x7A7A, b"3", topic_id_type=TopicIdType.SHORT),
    ]


def test_qos2_outbound_flow() -> None:
    g = connected()
    mid = g.c.publish(4, b"x", qos=2, retain=True, now=0.0)
    assert g.one() == Publish(4, b"x", 2, mid, True, topic_id_type=TopicIdType.PREDEFINED)
    g.feed(Pubrec(mid))
    assert g.one() == Pubrel(mid)
    g.feed(Pubrec(mid))  # duplicate PUBREC: PUBREL again
    assert g.one() == Pubrel(mid)
    assert g.events() == []
    g.feed(Pubcomp(mid))
    assert g.events() == [PublishAcked(mid, ReturnCode.ACCEPTED)]
    assert g.c.queued == 0


def test_pubrel_retransmitted() -> None:
    g = connected(retry_interval=5)
    mid = g.c.publish(4, b"x", qos=2, now=0.0)
    g.sent()
    g.feed(Pubrec(mid))
    g.sent()
    g.run_until(5.0)
    assert g.sent() == [Pubrel(mid)]


def test_stop_and_wait_one_request_in_flight() -> None:
    g = connected()
    m1 = g.c.publish(1, b"1", qos=1, now=0.0)
    m2 = g.c.publish(1, b"2", qos=1, now=0.0)
    m3 = g.c.subscribe("x/y", 1, now=0.0)
    assert len({m1, m2, m3}) == 3
    assert [type(p) for p in g.sent()] == [Publish]
    g.feed(Puback(1, m2, 0))  # not the one in flight: ignored
    assert g.sent() == [] and g.events() == []
    assert g.c.stats.ignored == 1
    g.feed(Puback(1, m1, 0))
    assert g.sent() == [Publish(1, b"2", 1, m2, topic_id_type=TopicIdType.PREDEFINED)]
    g.feed(Puback(1, m2, 0))
    assert g.sent() == [Subscribe(m3, "x/y", 1)]
    g.feed(Suback(12, m3, 1, 0))
    assert g.events() == [PublishAcked(m1, 0), PublishAcked(m2, 0), Subscribed(m3, "x/y", 12, 1, 0)]


def test_puback_invalid_topic_id_forces_reregister() -> None:
    g = connected()
    m = g.c.register("t", 0.0)
    g.feed(Regack(5, m, 0))
    g.sent()
    g.events()
    pm = g.c.publish("t", b"x", qos=1, now=1.0)
    assert g.one() == Publish(5, b"x", 1, pm)
    g.feed(Puback(5, pm, ReturnCode.INVALID_TOPIC_ID))
    assert g.events() == [PublishAcked(pm, ReturnCode.INVALID_TOPIC_ID)]
    assert g.c.topics.registered("t") is None
    g.c.publish("t", b"y", qos=1, now=2.0)
    reg = g.one()
    assert reg == Register(0, reg.msg_id, "t")  # type: ignore[attr-defined]


def test_puback_error_for_qos0_publish() -> None:
    g = connected()
    m = g.c.register("t", 0.0)
    g.feed(Regack(5, m, 0))
    g.sent()
    g.events()
    g.c.publish("t", b"x", now=1.0)
    g.feed(Puback(5, 0, ReturnCode.INVALID_TOPIC_ID))
    assert g.events() == [PublishAcked(0, ReturnCode.INVALID_TOPIC_ID)]
    assert g.c.topics.registered("t") is None


def test_auto_register_rejected_fails_the_publish() -> None:
    g = connected()
    pm = g.c.publish("t", b"x", qos=1, now=0.0)
    reg = g.one()
    assert isinstance(reg, Register)
    g.feed(Regack(0, reg.msg_id, ReturnCode.NOT_SUPPORTED))
    assert g.events() == [
        Registered("t", 0, reg.msg_id, ReturnCode.NOT_SUPPORTED),
        PublishAcked(pm, ReturnCode.NOT_SUPPORTED),
    ]
    assert g.sent() == [] and g.c.queued == 0


# ---------------------------------------------------------------------------- retries, keep-alive


def test_retransmission_sets_dup_then_connection_lost() -> None:
    g = connected(retry_interval=10, max_retries=3, keep_alive=1000)
    mid = g.c.publish(1, b"x", qos=1, now=0.0)
    first = g.one()
    assert isinstance(first, Publish) and not first.dup
    assert g.c.get_timer() == 10.0
    g.run_until(9.9)
    assert g.sent() == []
    g.run_until(30.0)
    again = g.sent()
    assert again == [Publish(1, b"x", 1, mid, dup=True, topic_id_type=TopicIdType.PREDEFINED)] * 3
    assert g.events() == []
    g.run_until(40.0)
    assert g.events() == [ConnectionLost("no answer to PUBLISH after 4 transmissions")]
    assert state(g) is ClientState.LOST
    assert g.c.stats.retransmissions == 3
    assert g.c.get_timer() is None
    with pytest.raises(LocalProtocolError):
        g.c.publish(1, b"x", qos=1, now=41.0)


def test_subscribe_retransmitted_with_dup() -> None:
    g = connected(retry_interval=3)
    mid = g.c.subscribe("a/+", 2, now=0.0)
    g.sent()
    g.run_until(3.0)
    assert g.sent() == [Subscribe(mid, "a/+", 2, dup=True)]


def test_keep_alive_pingreq_timing() -> None:
    g = connected(keep_alive=30, retry_interval=5, max_retries=1)
    assert g.c.get_timer() == 30.0
    g.run_until(10.0)
    g.c.publish(1, b"x", now=10.0)  # traffic pushes the keep-alive
    g.sent()
    assert g.c.get_timer() == 40.0
    g.run_until(39.9)
    assert g.sent() == []
    g.run_until(40.0)
    assert g.sent() == [Pingreq()]
    g.feed(Pingresp())
    assert g.events() == [PingResponse()]
    assert g.c.get_timer() == 70.0
    # The gateway stops answering: the keep-alive PINGREQ is retried, then the connection is lost.
    g.run_until(75.0)
    assert g.sent() == [Pingreq(), Pingreq()]
    g.run_until(80.0)
    assert g.events() == [ConnectionLost("no answer to PINGREQ after 2 transmissions")]


def test_keep_alive_zero_disables_ping() -> None:
    g = connected(keep_alive=0)
    assert g.c.get_timer() is None


def test_explicit_ping_and_gateway_ping() -> None:
    g = connected()
    g.c.ping(1.0)
    assert g.one() == Pingreq()
    g.feed(Pingresp())
    assert g.events() == [PingResponse()]
    g.feed(Pingreq())
    assert g.one() == Pingresp()
    g.feed(Pingresp())  # unsolicited: ignored
    assert g.events() == []


# ---------------------------------------------------------------------------- inbound


def test_inbound_qos1_acked_and_unknown_topic_rejected() -> None:
    g = connected()
    g.feed(Register(33, 1, "cmd/c1/reboot"))
    assert g.one() == Regack(33, 1, 0)
    g.feed(Publish(33, b"now", qos=1, msg_id=50))
    assert g.one() == Puback(33, 50, 0)
    assert g.events() == [MessageReceived("cmd/c1/reboot", 33, TopicIdType.NORMAL, b"now", 1, False, False)]
    g.feed(Publish(99, b"?", qos=1, msg_id=51))
    assert g.one() == Puback(99, 51, ReturnCode.INVALID_TOPIC_ID)
    assert g.events() == []
    g.feed(Publish(99, b"?", qos=0))  # QoS 0: delivered with an unknown topic
    assert g.events() == [MessageReceived(None, 99, TopicIdType.NORMAL, b"?", 0, False, False)]


def test_inbound_qos2_exactly_once_with_duplicates() -> None:
    g = connected(predefined={"fw/manifest": 2})
    pub = Publish(2, b"m", qos=2, msg_id=7, topic_id_type=TopicIdType.PREDEFINED)
    g.feed(pub)
    assert g.one() == Pubrec(7)
    g.feed(Publish(2, b"m", 2, 7, dup=True, topic_id_type=TopicIdType.PREDEFINED))
    assert g.one() == Pubrec(7)
    ev = g.events()
    assert ev == [MessageReceived("fw/manifest", 2, TopicIdType.PREDEFINED, b"m", 2, False, False)]
    assert g.c.stats.duplicates == 1
    g.feed(Pubrel(7))
    assert g.one() == Pubcomp(7)
    g.feed(Pubrel(7))  # our PUBCOMP was lost
    assert g.one() == Pubcomp(7)
    # After PUBREL the id is free: a new message with the same id is delivered.
    g.feed(Publish(2, b"n", qos=2, msg_id=7, topic_id_type=TopicIdType.PREDEFINED))
    assert [e.payload for e in g.events() if isinstance(e, MessageReceived)] == [b"n"]


def test_inbound_short_topic() -> None:
    g = connected()
    g.feed(Publish(0x6162, b"z", topic_id_type=TopicIdType.SHORT))
    assert g.events() == [MessageReceived("ab", 0x6162, TopicIdType.SHORT, b"z", 0, False, False)]


def test_wildcard_subscribe_with_gateway_register() -> None:
    g = connected()
    mid = g.c.subscribe("sensors/#", 1, now=0.0)
    assert g.c.datagrams_to_send(0.0) == [encode(Subscribe(mid, "sensors/#", 1))]
    g.feed(Suback(0, mid, 1, 0))
    assert g.events() == [Subscribed(mid, "sensors/#", 0, 1, 0)]
    g.feed(Register(9, 100, "sensors/t1"))
    assert g.one() == Regack(9, 100, 0)
    g.feed(Publish(9, b"20", qos=1, msg_id=101, retain=True))
    assert g.one() == Puback(9, 101, 0)
    assert g.events() == [MessageReceived("sensors/t1", 9, TopicIdType.NORMAL, b"20", 1, True, False)]


def test_plain_subscribe_learns_topic_id_from_suback() -> None:
    g = connected()
    mid = g.c.subscribe("a/b", now=0.0)
    g.sent()
    g.feed(Suback(4, mid, 0, 0))
    g.feed(Publish(4, b"x"))
    assert g.events()[-1] == MessageReceived("a/b", 4, TopicIdType.NORMAL, b"x", 0, False, False)


def test_subscribe_short_and_predefined_and_unsubscribe() -> None:
    g = connected(predefined={"fw/cmd": 3})
    m1 = g.c.subscribe("fw/cmd", 1, now=0.0)
    assert g.one() == Subscribe(m1, 3, 1, topic_id_type=TopicIdType.PREDEFINED)
    g.feed(Suback(3, m1, 1, 0))
    m2 = g.c.subscribe("xy", now=0.0, short=True)
    assert g.one() == Subscribe(m2, "xy", 0, topic_id_type=TopicIdType.SHORT)
    g.feed(Suback(0, m2, 0, 0))
    m3 = g.c.unsubscribe("a/#", now=0.0)
    assert g.one() == Unsubscribe(m3, "a/#")
    g.feed(Unsuback(m3))
    assert g.events() == [
        Subscribed(m1, "fw/cmd", 3, 1, 0),
        Subscribed(m2, "xy", 0, 0, 0),
        Unsubscribed(m3),
    ]


# ---------------------------------------------------------------------------- sleep, disconnect


def test_sleep_and_wake() -> None:
    g = connected()
    g.c.sleep(300, 1.0)
    assert g.c.datagrams_to_send(1.0) == [bytes.fromhex("04 18 01 2c")]
    with pytest.raises(LocalProtocolError):
        g.c.publish(1, b"x", qos=1, now=1.0)  # sleep requested: no new requests
    g.feed(Disconnect())
    assert g.events() == [Disconnected(300)]
    assert state(g) is ClientState.ASLEEP
    assert g.c.get_timer() is None  # no keep-alive while asleep
    g.c.wake(200.0)
    assert state(g) is ClientState.AWAKE
    assert g.c.datagrams_to_send(200.0) == [bytes.fromhex("04 16 63 31")]
    g.feed(Register(5, 1, "cmd/c1"), Publish(5, b"buffered", qos=1, msg_id=2))
    assert g.sent() == [Regack(5, 1, 0), Puback(5, 2, 0)]
    g.feed(Pingresp())
    assert g.events() == [
        MessageReceived("cmd/c1", 5, TopicIdType.NORMAL, b"buffered", 1, False, False),
        WakeCompleted(),
    ]
    assert state(g) is ClientState.ASLEEP
    # Back to active with CONNECT.
    g.c.connect(400.0)
    assert isinstance(g.one(), Connect)
    g.feed(Connack(0))
    assert state(g) is ClientState.ACTIVE


def test_wake_without_pingresp_is_retried_then_lost() -> None:
    g = connected(retry_interval=2, max_retries=1)
    g.c.sleep(60, 0.0)
    g.sent()
    g.feed(Disconnect())
    g.c.wake(50.0)
    g.sent()
    g.run_until(52.0)
    assert g.sent() == [Pingreq("c1")]
    g.run_until(54.0)
    assert g.events()[-1] == ConnectionLost("no answer to PINGREQ after 2 transmissions")


def test_disconnect_and_gateway_initiated_disconnect() -> None:
    g = connected()
    g.c.disconnect(1.0)
    assert g.one() == Disconnect()
    g.feed(Disconnect())
    assert g.events() == [Disconnected(None)]
    assert state(g) is ClientState.DISCONNECTED
    g.connected()
    g.c.publish(1, b"x", qos=1, now=2.0)
    g.feed(Disconnect())  # the gateway ends the session
    assert g.events() == [Disconnected(None)]
    assert state(g) is ClientState.DISCONNECTED and g.c.queued == 0
    g.feed(Disconnect())  # and again: ignored
    assert g.events() == []


def test_update_will() -> None:
    g = connected()
    g.c.update_will(Will("w/t", b"bye", 1), 0.0)
    assert g.one() == WillTopicUpd("w/t", 1)
    g.feed(WillTopicResp(0))
    assert g.one() == WillMsgUpd(b"bye")
    g.feed(WillMsgResp(0))
    assert g.events() == [WillUpdated("topic", 0), WillUpdated("message", 0)]
    g.c.update_will(None, 1.0)
    assert g.c.datagrams_to_send(1.0) == [b"\x02\x1a"]


def test_gateway_discovery() -> None:
    c = ClientSession("c1")
    c.search_gateway(0.0, radius=1)
    assert c.datagrams_to_send(0.0) == [encode(SearchGw(1))]
    c.receive_datagram(encode(Advertise(3, 900)), 0.0)
    c.receive_datagram(encode(GwInfo(3, b"\x7f\x00\x00\x01")), 0.0)
    c.receive_datagram(encode(SearchGw(0)), 0.0)  # another client: ignored
    assert c.events() == [GatewayFound(3, b"", 900), GatewayFound(3, b"\x7f\x00\x00\x01", None)]


# ---------------------------------------------------------------------------- msg ids, errors


def test_msg_ids_wrap_and_skip_ids_in_use() -> None:
    g = connected()
    g.c._queue._next_msg_id = 0xFFFE  # white-box: start near the end of the range
    ids = [g.c.publish(1, b"", qos=1, now=0.0) for _ in range(3)]
    assert ids == [0xFFFE, 0xFFFF, 1]
    g.c._queue._next_msg_id = 0xFFFF
    assert g.c.publish(1, b"", qos=1, now=0.0) == 2  # 0xFFFF and 1 are still in flight/queued


def test_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        ClientSession("")
    with pytest.raises(LocalProtocolError):
        ClientSession("x" * 24)
    with pytest.raises(LocalProtocolError):
        ClientSession("c", predefined={"a": 0})
    with pytest.raises(LocalProtocolError):
        Will("t", b"m", qos=-1)
    c = ClientSession("c1")
    for call in (
        lambda: c.publish("a", b"x", now=0.0),
        lambda: c.register("a", 0.0),
        lambda: c.subscribe("a", now=0.0),
        lambda: c.unsubscribe("a", now=0.0),
        lambda: c.ping(0.0),
        lambda: c.sleep(10, 0.0),
        lambda: c.wake(0.0),
        lambda: c.disconnect(0.0),
        lambda: c.update_will(None, 0.0),
    ):
        with pytest.raises(LocalProtocolError):
            call()
    g = connected()
    for bad in (
        lambda: g.c.connect(0.0),
        lambda: g.c.wake(0.0),
        lambda: g.c.publish("a/#", b"x", now=0.0),
        lambda: g.c.publish("a", b"x", qos=3, now=0.0),
        lambda: g.c.publish("a", "str", now=0.0),  # type: ignore[arg-type]
        lambda: g.c.publish("abc", b"x", now=0.0, short=True),
        lambda: g.c.subscribe("a", qos=-1, now=0.0),
        lambda: g.c.register("a/+", 0.0),
        lambda: g.c.sleep(70000, 0.0),
    ):
        with pytest.raises(LocalProtocolError):
            bad()
    assert g.sent() == [] and g.c.queued == 0
    g.c.disconnect(0.0)
    with pytest.raises(LocalProtocolError):
        g.c.subscribe("a", now=0.0)


def test_gateway_only_packets_are_violations() -> None:
    g = connected()
    for p in (Connect("x", 1), WillTopic("t"), WillMsg(b""), Subscribe(1, "a"), Unsubscribe(1, "a")):
        g.feed(p)
    ev = g.events()
    assert len(ev) == 5 and all(isinstance(e, ProtocolViolation) for e in ev)
    assert g.c.stats.violations == 5
    assert g.sent() == []
    assert state(g) is ClientState.ACTIVE


def test_garbage_is_counted_and_reported() -> None:
    g = connected()
    for d in (b"", b"\x00", b"\x05\x0c\x00", b"\x02\xff", b"\x03\x05\x00\x00"):
        g.c.receive_datagram(d, 0.0)
    assert g.c.stats.decode_errors == 5
    assert all(isinstance(e, ProtocolViolation) for e in g.events())
    assert state(g) is ClientState.ACTIVE


def _gateway_packets() -> st.SearchStrategy[Packet]:
    u16 = st.integers(0, 0xFFFF)
    rc = st.integers(0, 255)
    return st.one_of(
        st.builds(Connack, rc),
        st.just(WillTopicReq()),
        st.just(WillMsgReq()),
        st.builds(Register, u16, u16, st.text(min_size=1, max_size=8)),
        st.builds(Regack, u16, u16, rc),
        st.builds(
            Publish,
            u16,
            st.binary(max_size=8),
            st.sampled_from([0, 1, 2]),
            u16,
            st.booleans(),
            st.booleans(),
            st.sampled_from(list(TopicIdType)),
        ),
        st.builds(Puback, u16, u16, rc),
        st.builds(Pubrec, st.integers(0, 4)),
        st.builds(Pubrel, st.integers(0, 4)),
        st.builds(Pubcomp, st.integers(0, 4)),
        st.builds(Suback, u16, st.integers(0, 4), st.sampled_from([0, 1, 2]), rc),
        st.builds(Unsuback, st.integers(0, 4)),
        st.just(Pingreq()),
        st.just(Pingresp()),
        st.builds(Disconnect, st.none() | u16),
        st.builds(WillTopicResp, rc),
        st.builds(WillMsgResp, rc),
        st.builds(Advertise, st.integers(0, 255), u16),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=12), _gateway_packets().map(encode)), max_size=30),
    st.sampled_from(["disconnected", "connecting", "active", "busy", "asleep"]),
)
def test_any_datagram_sequence_never_raises(datagrams: list[bytes], start: str) -> None:
    g = Gw(retry_interval=1, max_retries=2)
    if start == "connecting":
        g.c.connect(0.0)
    elif start != "disconnected":
        g.connected()
    if start == "busy":
        g.c.publish("a/b", b"x", qos=2, now=0.0)
        g.c.subscribe("a/#", 1, now=0.0)
    elif start == "asleep":
        g.c.sleep(10, 0.0)
        g.feed(Disconnect())
        g.c.wake(0.0)
    for i, d in enumerate(datagrams):
        g.c.receive_datagram(d, i * 0.5)
        g.run_until(i * 0.5)
        for out in g.c.datagrams_to_send(g.now):
            decode(out)  # everything the client sends is valid
        for e in g.c.events():
            assert isinstance(e, ClientEvent)
    assert g.c.state in ClientState
