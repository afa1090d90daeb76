"""QoS 2 both ways, deferred acknowledgements and persistent-session redelivery in the MQTT 5
session (bridge/mqtt5/_session.py), sans-I/O and against a real mosquitto."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mqtt5 import (
    ConnAck,
    ConnectOptions,
    Mqtt5Client,
    Mqtt5ProtocolError,
    Mqtt5Session,
    PubAck,
    PublishIn,
    UnsubAck,
    Will,
    encode_user_properties,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pkt(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _publish(
    topic: str, payload: bytes, qos: int, mid: int, dup: bool = False, props: bytes = b"\x00"
) -> bytes:
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw + (mid.to_bytes(2, "big") if qos else b"") + props + payload
    return _pkt(0x30 | qos << 1 | (8 if dup else 0), body)


def _session(auto_ack: bool = True, receive_maximum: int = 65535) -> Mqtt5Session:
    s = Mqtt5Session(ConnectOptions("c1", receive_maximum=receive_maximum), auto_ack=auto_ack)
    s.take_outgoing()
    (ack,) = s.receive(_pkt(0x20, b"\x00\x00\x00"))
    assert isinstance(ack, ConnAck)
    return s


def test_incoming_qos2_pubrec_pubrel_pubcomp() -> None:
    s = _session()
    (msg,) = s.receive(_publish("/t", b"x", 2, 9))
    assert isinstance(msg, PublishIn) and msg.qos == 2
    assert s.take_outgoing() == b"\x50\x02\x00\x09"  # PUBREC
    assert s.receive(_publish("/t", b"x", 2, 9, dup=True)) == []  # a resend: PUBREC again, once delivered
    assert s.take_outgoing() == b"\x50\x02\x00\x09"
    assert s.receive(_pkt(0x62, b"\x00\x09")) == []
    assert s.take_outgoing() == b"\x70\x02\x00\x09"  # PUBCOMP
    # a PUBREL whose PUBREC went out on an earlier connection: PUBCOMP "packet id not found"
    s.receive(_pkt(0x62, b"\x00\x0a"))
    assert s.take_outgoing() == b"\x70\x03\x00\x0a\x92"


def test_deferred_ack_waits_for_the_caller() -> None:
    s = _session(auto_ack=False)
    (m1,) = s.receive(_publish("/a", b"1", 1, 3))
    (m2,) = s.receive(_publish("/b", b"2", 2, 4))
    assert s.take_outgoing() == b"" and s.unacked_in == 2
    assert s.receive(_publish("/a", b"1", 1, 3, dup=True)) == []  # held by the caller already
    assert s.ack(m2.mid) and s.take_outgoing() == b"\x50\x02\x00\x04"
    assert s.ack(m1.mid) and s.take_outgoing() == b"\x40\x02\x00\x03"  # out of order is fine
    assert not s.ack(m1.mid) and s.take_outgoing() == b""  # twice: nothing
    s.receive(_pkt(0x62, b"\x00\x04"))
    assert s.take_outgoing() == b"\x70\x02\x00\x04" and s.unacked_in == 0


def test_our_receive_maximum_is_sent_and_enforced() -> None:
    out = Mqtt5Session(ConnectOptions("c", keepalive=0, receive_maximum=2)).take_outgoing()
    assert b"\x03\x21\x00\x02" in out  # properties: length 3, Receive Maximum 2
    s = _session(auto_ack=False, receive_maximum=2)
    s.receive(_publish("/a", b"", 1, 1) + _publish("/a", b"", 1, 2))
    with pytest.raises(Mqtt5ProtocolError):
        s.receive(_publish("/a", b"", 1, 3))


def test_outgoing_qos2_and_unsubscribe() -> None:
    s = _session()
    mid = s.publish("/q2", b"v", 2, retain=True)
    assert s.take_outgoing()[0] == 0x35  # PUBLISH, QoS 2, retain
    assert s.receive(_pkt(0x50, mid.to_bytes(2, "big"))) == []
    assert s.take_outgoing() == b"\x62\x02" + mid.to_bytes(2, "big")  # PUBREL
    assert s.inflight == 1
    assert s.receive(_pkt(0x70, mid.to_bytes(2, "big"))) == [PubAck(mid, 0)]
    assert s.inflight == 0
    refused = s.publish("/q2", b"v", 2)
    assert s.receive(_pkt(0x50, refused.to_bytes(2, "big") + b"\x87")) == [PubAck(refused, 0x87)]
    with pytest.raises(Mqtt5ProtocolError):  # PUBACK for a QoS 2 message
        s.receive(_pkt(0x40, s.publish("/q2", b"", 2).to_bytes(2, "big")))
    u = _session()
    umid = u.unsubscribe(["/a/#"])
    assert u.take_outgoing() == _pkt(0xA2, umid.to_bytes(2, "big") + b"\x00\x00\x04/a/#")
    assert u.receive(_pkt(0xB0, umid.to_bytes(2, "big") + b"\x00\x00")) == [UnsubAck(umid, (0,))]


def test_connect_with_will_matches_the_spec() -> None:
    s = Mqtt5Session(ConnectOptions("n", keepalive=10, will=Will("w/t", b"bye", 1, True)))
    body = b"\x00\x04MQTT\x05" + bytes([0x02 | 0x04 | 0x08 | 0x20]) + b"\x00\x0a\x00\x00\x01n"
    assert s.take_outgoing() == _pkt(0x10, body + b"\x00\x00\x03w/t\x00\x03bye")


@settings(max_examples=200, deadline=None)
@given(
    topic=st.text(
        st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40
    ),
    payload=st.binary(max_size=200),
    qos=st.integers(0, 2),
    mid=st.integers(1, 65535),
    retain=st.booleans(),
    dup=st.booleans(),
    user=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3),
    auto_ack=st.booleans(),
)
def test_publish_codec_round_trip_against_paho_properties(
    topic: str,
    payload: bytes,
    qos: int,
    mid: int,
    retain: bool,
    dup: bool,
    user: list[tuple[str, str]],
    auto_ack: bool,
) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if user:
        props.UserProperty = user
    packed = props.pack()  # type: ignore[no-untyped-call]
    assert packed == encode_user_properties(user)  # our encoder agrees with paho's
    s = _session(auto_ack=auto_ack)
    wire = _publish(topic, payload, qos, mid, dup, packed)
    wire = bytes([wire[0] | retain]) + wire[1:]
    (msg,) = s.receive(wire)
    assert isinstance(msg, PublishIn)
    assert (msg.topic, msg.payload, msg.qos, msg.retain, msg.dup, msg.user_properties) == (
        topic, payload, qos, retain, dup, user
    )  # fmt: skip
    acks = {0: b"", 1: b"\x40\x02", 2: b"\x50\x02"}
    want = acks[qos] + (mid.to_bytes(2, "big") if qos else b"")
    if auto_ack:
        assert s.take_outgoing() == want
    else:
        assert s.take_outgoing() == b"" and (s.ack(msg.mid) == bool(qos))
        assert s.take_outgoing() == want
    # our own encoder, read back by our decoder
    out = _session()
    sent_mid = out.publish(topic, payload, qos, encode_user_properties(user), retain)
    (again,) = _session(auto_ack=False).receive(out.take_outgoing())
    assert isinstance(again, PublishIn)
    assert (again.topic, again.payload, again.qos, again.mid, again.retain) == (
        topic,
        payload,
        qos,
        sent_mid,
        retain,
    )


def test_unacked_messages_redelivered_after_reconnect(mosquitto: Any) -> None:
    """A persistent session that did not acknowledge gets the messages again, with DUP, at the
    next connection; once acknowledged they do not come back."""

    async def main() -> None:
        opts = ConnectOptions("holder", clean_start=False, session_expiry=60)
        got: asyncio.Queue[PublishIn] = asyncio.Queue()
        first, _ = await Mqtt5Client.connect(
            "127.0.0.1", mosquitto.port, opts, got.put_nowait, auto_ack=False
        )
        await first.subscribe([("q1/#", 1), ("q2/#", 2)])
        pub, _ = await Mqtt5Client.connect("127.0.0.1", mosquitto.port, ConnectOptions("p"), lambda m: None)
        pub.publish("q1/a", b"one", 1)
        pub.publish("q2/a", b"two", 2)
        msgs = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
        assert sorted((m.topic, m.qos, m.dup) for m in msgs) == [("q1/a", 1, False), ("q2/a", 2, False)]
        assert first._transport is not None
        first._transport.abort()  # gone without acknowledging either

        second, ack = await Mqtt5Client.connect(
            "127.0.0.1", mosquitto.port, opts, got.put_nowait, auto_ack=False
        )
        assert ack.session_present
        again = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
        assert sorted((m.topic, m.payload, m.dup) for m in again) == [
            ("q1/a", b"one", True),
            ("q2/a", b"two", True),
        ]
        for m in again:
            assert second.ack(m.mid)
        await asyncio.sleep(0.3)  # PUBREC -> PUBREL -> PUBCOMP
        second.close()

        third, _ = await Mqtt5Client.connect(
            "127.0.0.1", mosquitto.port, opts, got.put_nowait, auto_ack=False
        )
        await asyncio.sleep(0.5)
        assert got.empty()
        third.close()
        pub.close()

    asyncio.run(main())
