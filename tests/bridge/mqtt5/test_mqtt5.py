"""The MQTT 5 client (bridge/mqtt5/). Codec against
paho's encoder, hostile bytes, the server's limits, and a real mosquitto (shared subscriptions,
persistent session, credentials, keep-alive, session takeover)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mqtt import StampedIdentity, stamped_identity_of
from bridge.mqtt5 import (
    ConnAck,
    ConnectOptions,
    Mqtt5Client,
    Mqtt5ConnectError,
    Mqtt5Error,
    Mqtt5ProtocolError,
    Mqtt5Session,
    PingResp,
    PubAck,
    PublishIn,
    ServerDisconnect,
    SubAck,
    UnsubAck,
    encode_user_properties,
)
from meshota.broker import start_mosquitto


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pkt(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _props(**values: object) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props.pack()  # type: ignore[no-any-return,no-untyped-call]


def _publish(topic: str, payload: bytes, qos: int = 0, mid: int = 0, props: bytes = b"\x00") -> bytes:
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw + (mid.to_bytes(2, "big") if qos else b"") + props + payload
    return _pkt(0x30 | qos << 1, body)


CONNACK_OK = _pkt(0x20, b"\x00\x00\x00")


def _session(**connack_props: int) -> Mqtt5Session:
    s = Mqtt5Session(ConnectOptions("c1", keepalive=30))
    s.take_outgoing()
    props = b""
    if "receive_maximum" in connack_props:
        props += b"\x21" + connack_props["receive_maximum"].to_bytes(2, "big")
    if "keepalive" in connack_props:
        props += b"\x13" + connack_props["keepalive"].to_bytes(2, "big")
    if "max_packet" in connack_props:
        props += b"\x27" + connack_props["max_packet"].to_bytes(4, "big")
    (ack,) = s.receive(_pkt(0x20, b"\x00\x00" + _varint(len(props)) + props))
    assert isinstance(ack, ConnAck) and ack.reason == 0
    return s


def test_connect_packet_matches_the_spec() -> None:
    s = Mqtt5Session(
        ConnectOptions(
            "bridge-1", keepalive=30, clean_start=False, session_expiry=3600, username="u", password="p"
        )
    )
    out = s.take_outgoing()
    body = (
        b"\x00\x04MQTT\x05" + bytes([0x80 | 0x40]) + (30).to_bytes(2, "big")
        + b"\x05\x11" + (3600).to_bytes(4, "big") + b"\x00\x08bridge-1\x00\x01u\x00\x01p"
    )  # fmt: skip
    assert out == _pkt(0x10, body)
    clean = Mqtt5Session(ConnectOptions("x", keepalive=0)).take_outgoing()
    assert clean == _pkt(0x10, b"\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x01x")


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize(
    "props",
    [
        {},
        {"UserProperty": [("meshota-device", "node-1"), ("meshota-verified", "1")]},
        {
            "UserProperty": [("a", "é"), ("meshota-device", "node-2")],
            "ContentType": "application/msgpack",
            "CorrelationData": b"\x00\x01",
            "ResponseTopic": "/x/y",
            "PayloadFormatIndicator": 0,
            "MessageExpiryInterval": 60,
            "SubscriptionIdentifier": [5],
        },
    ],
)
def test_publish_from_paho_encoder_decodes(qos: int, props: dict[str, Any]) -> None:
    s = _session()
    packed = _props(**props) if props else b"\x00"
    (msg,) = s.receive(_publish("/mender/api/devices/v1/x", b"\x81\xa1i", qos, 7, packed))
    assert isinstance(msg, PublishIn)
    assert (msg.topic, msg.payload, msg.qos, msg.mid) == (
        "/mender/api/devices/v1/x",
        b"\x81\xa1i",
        qos,
        7 * qos,
    )
    assert msg.user_properties == props.get("UserProperty", [])
    assert s.take_outgoing() == (b"\x40\x02\x00\x07" if qos else b"")  # PUBACK for QoS 1 only


def test_packets_split_anywhere_give_the_same_events() -> None:
    stream = (
        _publish("/a", b"x" * 300, 1, 1)
        + _publish("/b", b"", 0)
        + _pkt(0x90, b"\x00\x01\x00\x01")
        + b"\xd0\x00"
        + _publish("/c", b"y" * 20000, 1, 2, encode_user_properties([("k", "v")]))
    )
    whole = _session()
    whole.subscribe([("/a", 1)])
    expected = whole.receive(stream)
    assert [type(e) for e in expected] == [PublishIn, PublishIn, SubAck, type(expected[3]), PublishIn]
    for step in (1, 2, 3, 7, 250):
        s = _session()
        s.subscribe([("/a", 1)])
        got: list[object] = []
        for i in range(0, len(stream), step):
            got += s.receive(stream[i : i + step])
        assert got == expected


def test_receive_maximum_holds_back_qos1_until_a_puback() -> None:
    s = _session(receive_maximum=2)
    mids = [s.publish(f"/r/{i}", b"p", 1) for i in range(4)]
    sent = s.take_outgoing()
    assert sent.count(b"/r/") == 2 and s.inflight == 4
    assert s.receive(_pkt(0x40, mids[0].to_bytes(2, "big"))) == [PubAck(mids[0], 0)]
    assert s.take_outgoing().count(b"/r/2") == 1
    s.publish("/q0", b"", 0)  # QoS 0 never waits
    assert s.take_outgoing().startswith(b"\x30")
    s.receive(_pkt(0x40, mids[1].to_bytes(2, "big") + b"\x10"))  # reason "no matching subscribers"
    assert s.take_outgoing().count(b"/r/3") == 1


def test_server_limits_are_obeyed() -> None:
    s = _session(max_packet=64, keepalive=7)
    assert s.keepalive == 7
    with pytest.raises(Mqtt5Error):
        s.publish("/big", b"x" * 64, 1)
    assert s.inflight == 0 and s.take_outgoing() == b""
    with pytest.raises(ValueError):
        s.publish("/a/+", b"", 0)
    with pytest.raises(ValueError):
        s.publish("/a", b"", 3)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_publish("/t", b"x", 3, 5), "QoS 3"),
        (_publish("/t", b"x", 0, 0, _props(TopicAlias=3)), "topic alias"),
        (_publish("", b"x", 0), "empty topic"),
        (_publish("/t/#", b"x", 0), "wildcard topic"),
        (_pkt(0x32, b"\x00\x02/t\x00\x00\x00"), "packet id 0"),
        (_pkt(0x30, b"\x00\x02\xff\xfe\x00"), "topic not UTF-8"),
        (_pkt(0x30, b"\x00\x02/t\x05\x26\x00\x01a"), "property length beyond the packet"),
        (_pkt(0x30, b"\x00\x02/t\x03\x26\x00\x01a\x00\x01b"), "user property overrunning its length"),
        (_pkt(0x30, b"\x00\x02/t\xff\xff\xff\xff\x01"), "varint too long"),
        (_pkt(0x30, b"\x00\x02/t\x02\x7f\x00"), "unknown property"),
        (_pkt(0x40, b"\x00\x09"), "PUBACK for an unknown packet id"),
        (_pkt(0x90, b"\x00\x09\x00\x00"), "SUBACK for an unknown packet id"),
        (CONNACK_OK, "second CONNACK"),
        (b"\x30\xff\xff\xff\xff\x01", "remaining length too long"),
        (_pkt(0xF0, b"\x00\x00"), "AUTH"),
    ],
)
def test_protocol_violations_raise_one_error_type(data: bytes, why: str) -> None:
    s = _session()
    with pytest.raises(Mqtt5ProtocolError):
        s.receive(data)


def test_nothing_but_connack_before_connack() -> None:
    s = Mqtt5Session(ConnectOptions("c"))
    with pytest.raises(Mqtt5ProtocolError):
        s.receive(_publish("/t", b"x"))
    refused = Mqtt5Session(ConnectOptions("c"))
    (ack,) = refused.receive(_pkt(0x20, b"\x00\x87\x00"))
    assert isinstance(ack, ConnAck) and ack.reason == 0x87 and not refused.connected


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_hostile_bytes_raise_only_protocol_errors(data: bytes, step: int) -> None:
    s = _session()
    try:
        for i in range(0, len(data), step):
            for event in s.receive(data[i : i + step]):
                assert isinstance(event, PublishIn | PubAck | SubAck | UnsubAck | PingResp | ServerDisconnect)
    except Mqtt5ProtocolError:
        pass


def test_stamp_from_pairs() -> None:
    assert stamped_identity_of([("meshota-device", "n1"), ("meshota-verified", "1")]) == StampedIdentity(
        "n1", True
    )
    assert stamped_identity_of([("meshota-device", "n1")]) == StampedIdentity("n1", False)
    assert stamped_identity_of([("meshota-device", "n1"), ("meshota-device", "n2")]) is None
    assert stamped_identity_of([("meshota-device", "n/1")]) is None
    assert stamped_identity_of([]) is None


# --- against a real mosquitto ----------------------------------------------------------------------


def test_round_trip_shared_subscription_and_properties(mosquitto: Any) -> None:
    async def main() -> None:
        got: asyncio.Queue[PublishIn] = asyncio.Queue()
        acked: list[int] = []
        sub, ack = await Mqtt5Client.connect(
            "127.0.0.1", mosquitto.port, ConnectOptions("sub-1"), got.put_nowait
        )
        assert not ack.session_present
        assert await sub.subscribe([("$share/g/req/#", 1)]) == (1,)
        pub, _ = await Mqtt5Client.connect(
            "127.0.0.1",
            mosquitto.port,
            ConnectOptions("pub-1"),
            lambda m: None,
            lambda mid, _: acked.append(mid),
        )
        props = encode_user_properties([("meshota-device", "node-7"), ("x", "é")])
        mids = [pub.publish(f"req/{i}", b"p%d" % i, 1, props) for i in range(300)]
        msgs = [await asyncio.wait_for(got.get(), 10) for _ in range(300)]
        assert [m.payload for m in msgs] == [b"p%d" % i for i in range(300)]
        assert all(m.user_properties == [("meshota-device", "node-7"), ("x", "é")] for m in msgs)
        for _ in range(100):
            if len(acked) == 300:
                break
            await asyncio.sleep(0.02)
        assert sorted(acked) == sorted(mids)
        pub.close()
        sub.close()
        await pub.closed  # a normal close completes without an exception

    asyncio.run(main())


def test_persistent_session_gets_what_was_published_while_away(mosquitto: Any) -> None:
    async def main() -> None:
        opts = ConnectOptions("keeper", clean_start=False, session_expiry=60)
        first, _ = await Mqtt5Client.connect("127.0.0.1", mosquitto.port, opts, lambda m: None)
        await first.subscribe([("keep/#", 1)])
        assert first._transport is not None
        first._transport.abort()  # gone without DISCONNECT
        pub, _ = await Mqtt5Client.connect("127.0.0.1", mosquitto.port, ConnectOptions("p2"), lambda m: None)
        for i in range(5):
            pub.publish(f"keep/{i}", b"%d" % i, 1)
        await asyncio.sleep(0.3)
        got: asyncio.Queue[PublishIn] = asyncio.Queue()
        again, ack = await Mqtt5Client.connect("127.0.0.1", mosquitto.port, opts, got.put_nowait)
        assert ack.session_present
        msgs = [await asyncio.wait_for(got.get(), 10) for _ in range(5)]
        assert sorted(m.payload for m in msgs) == [b"0", b"1", b"2", b"3", b"4"]
        again.close()
        pub.close()

    asyncio.run(main())


def test_takeover_and_keepalive(mosquitto: Any) -> None:
    async def main() -> None:
        opts = ConnectOptions("same-id", keepalive=1)
        first, _ = await Mqtt5Client.connect("127.0.0.1", mosquitto.port, opts, lambda m: None)
        await asyncio.sleep(2.5)  # > 1.5 x keep-alive: only our PINGREQs keep it open
        assert not first.closed.done()
        second, _ = await Mqtt5Client.connect("127.0.0.1", mosquitto.port, opts, lambda m: None)
        with pytest.raises(Mqtt5Error, match=r"DISCONNECT 0x8e|connection"):
            await asyncio.wait_for(first.closed, 5)
        with pytest.raises(Mqtt5Error):
            first.publish("/t", b"", 0)
        second.close()

    asyncio.run(main())


def test_bad_credentials_and_no_broker(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "m", extra_conf="")
    broker.stop()

    async def refused_port() -> None:
        with pytest.raises(Mqtt5Error, match="cannot connect"):
            await Mqtt5Client.connect(
                "127.0.0.1", broker.port, ConnectOptions("x"), lambda m: None, timeout=2
            )

    asyncio.run(refused_port())
    pw = tmp_path / "passwd"
    pw.write_text("")
    pw.chmod(0o644)
    # mosquitto started as root drops to user "mosquitto" unless told to stay
    user = "user root\n" if os.geteuid() == 0 else ""
    locked = start_mosquitto(
        tmp_path / "locked", extra_conf=f"allow_anonymous false\npassword_file {pw}\n{user}"
    )
    try:

        async def refused_login() -> None:
            opts = ConnectOptions("x", username="nobody", password="wrong")
            with pytest.raises(Mqtt5ConnectError) as err:
                await Mqtt5Client.connect("127.0.0.1", locked.port, opts, lambda m: None, timeout=5)
            assert err.value.reason >= 0x80

        asyncio.run(refused_login())
    finally:
        locked.stop()


def test_packet_ids_are_shared_released_and_bounded() -> None:
    s = _session(max_packet=200)
    sub = s.subscribe([("/a", 1)])
    pub = s.publish("/p", b"x", 1)
    assert sub != pub  # SUBSCRIBE and PUBLISH draw from one id space
    with pytest.raises(Mqtt5Error):
        s.publish("/big", b"x" * 300, 1)  # refused: its id goes back
    assert s._used == {sub, pub}
    s.receive(_pkt(0x90, sub.to_bytes(2, "big") + b"\x00\x01") + _pkt(0x40, pub.to_bytes(2, "big")))
    assert s._used == set() and s.inflight == 0
    for _ in range(65535):  # a server that acknowledges nothing: every id ends up in use
        s.publish("/p", b"", 1)
    with pytest.raises(Mqtt5Error, match="every packet id"):
        s.publish("/p", b"", 1)
