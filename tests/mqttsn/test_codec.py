"""MQTT-SN v1.2 codec: golden bytes, hypothesis round-trips, garbage input, field validation.

Golden hex is written by hand from the v1.2 spec (see /work/shared/reference/mqttsn.md §3);
the vectors marked ``paho`` are the captures of §1.5/§1.3 of that file, copied verbatim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqttsn
from mqttsn import (
    MAX_PACKET_SIZE,
    Advertise,
    Connack,
    Connect,
    DecodeError,
    Disconnect,
    Encapsulated,
    GwInfo,
    LocalProtocolError,
    MsgType,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    RemoteProtocolError,
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
    peek_header,
    short_topic_id,
    short_topic_name,
)


def h(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr)


def assert_decode_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data)
    # A peer's bad bytes are never reported as our own mistake.
    assert not isinstance(info.value, LocalProtocolError)
    return info.value


# The payloads of the two QoS -1 captures are elided ("...") in the reference; these fill exactly
# the number of bytes the captured length octet (0x14, 0x15) announces.
QOSM1_PREDEF_DATA = b"qos-1 predef!"  # 0x14 - 7 = 13 bytes
QOSM1_SHORT_DATA = b"hello from ab!"  # 0x15 - 7 = 14 bytes
SHORT_ZZ_DATA = b"hello short"  # 0x12 - 7 = 11 bytes
PAYLOAD_600 = bytes(i % 251 for i in range(600))

PAHO_FWD_INNER = h("0E 04 04 01 00 0A") + b"fwdnode1"

# (id, wire bytes, packet)
GOLDEN: list[tuple[str, bytes, Packet]] = [
    # ---- §1.5 / §1.3 captures from the Paho gateway, verbatim ----
    ("paho-connect", h("0E 04 04 01 00 0A") + b"snpub-q1", Connect("snpub-q1", 10)),
    ("paho-connack", h("03 05 00"), Connack()),
    ("paho-register", h("10 0A 00 00 00 01") + b"sn/test/q1", Register(0, 1, "sn/test/q1")),
    ("paho-regack", h("07 0B 00 01 00 01 00"), Regack(1, 1, ReturnCode.ACCEPTED)),
    (
        "paho-publish-qos1",
        h("11 0C 20 00 01 00 02") + b"hello qos1",
        Publish(1, b"hello qos1", qos=1, msg_id=2),
    ),
    ("paho-puback", h("07 0D 00 01 00 02 00"), Puback(1, 2)),
    ("paho-disconnect", h("02 18"), Disconnect()),
    (
        "paho-publish-3-byte-length",
        h("01 02 61 0C 20 00 01 00 03") + PAYLOAD_600,
        Publish(1, PAYLOAD_600, qos=1, msg_id=3),
    ),
    ("paho-disconnect-sleep", h("04 18 00 14"), Disconnect(20)),
    ("paho-pingreq-sleeper", h("0F 16") + b"probe-sleeper", Pingreq("probe-sleeper")),
    (
        "paho-connect-will",
        h("10 04 0C 01 00 05") + b"probe-will",
        Connect("probe-will", 5, clean_session=True, will=True),
    ),
    ("paho-willtopicreq", h("02 06"), WillTopicReq()),
    ("paho-willtopic", h("10 07 00") + b"sn/will/probe", WillTopic("sn/will/probe")),
    ("paho-willmsgreq", h("02 08"), WillMsgReq()),
    ("paho-willmsg", h("0C 09") + b"probe died", WillMsg(b"probe died")),
    (
        "paho-publish-qos-1-predefined",
        h("14 0C 61 00 01 00 00") + QOSM1_PREDEF_DATA,
        Publish(1, QOSM1_PREDEF_DATA, qos=-1, topic_id_type=TopicIdType.PREDEFINED),
    ),
    (
        "paho-publish-qos-1-short",
        h("15 0C 62 61 62 00 00") + QOSM1_SHORT_DATA,
        Publish(short_topic_id("ab"), QOSM1_SHORT_DATA, qos=-1, topic_id_type=TopicIdType.SHORT),
    ),
    (
        "paho-publish-short-zz",
        h("12 0C 22 7A 7A 00 01") + SHORT_ZZ_DATA,
        Publish(0x7A7A, SHORT_ZZ_DATA, qos=1, msg_id=1, topic_id_type=TopicIdType.SHORT),
    ),
    ("paho-pubrec", h("04 0F 00 02"), Pubrec(2)),
    ("paho-pubrel", h("04 10 00 02"), Pubrel(2)),
    ("paho-pubcomp", h("04 0E 00 02"), Pubcomp(2)),
    ("paho-searchgw", h("03 01 01"), SearchGw(1)),
    ("paho-gwinfo", h("03 02 01"), GwInfo(1)),
    (
        "paho-encapsulated-connect",
        h("07 FE 00 34 36 36 30") + PAHO_FWD_INNER,
        Encapsulated(b"4660", PAHO_FWD_INNER),
    ),
    # ---- hand-written from the spec ----
    ("advertise", h("05 00 01 03 84"), Advertise(1, 900)),
    ("advertise-max", h("05 00 FF FF FF"), Advertise(255, 65535)),
    ("searchgw-radius-0", h("03 01 00"), SearchGw()),
    ("gwinfo-with-gw-add", h("07 02 05 C0 A8 01 02"), GwInfo(5, h("C0 A8 01 02"))),
    ("connect-no-flags", h("07 04 00 01 00 3C 63"), Connect("c", 60, clean_session=False)),
    (
        "connect-will-only",
        h("07 04 08 01 FF FF 78"),
        Connect("x", 65535, clean_session=False, will=True),
    ),
    ("connect-other-protocol-id", h("07 04 04 02 00 00 78"), Connect("x", 0, protocol_id=2)),
    ("connack-congestion", h("03 05 01"), Connack(ReturnCode.CONGESTION)),
    ("connack-invalid-topic", h("03 05 02"), Connack(ReturnCode.INVALID_TOPIC_ID)),
    ("connack-not-supported", h("03 05 03"), Connack(ReturnCode.NOT_SUPPORTED)),
    ("willtopic-empty", h("02 07"), WillTopic()),
    ("willtopic-qos1-retain", h("06 07 30 61 2F 62"), WillTopic("a/b", qos=1, retain=True)),
    ("willtopic-qos2", h("04 07 40 74"), WillTopic("t", qos=2)),
    ("willtopic-retain-only", h("04 07 10 74"), WillTopic("t", retain=True)),
    ("willmsg-empty", h("02 09"), WillMsg()),
    ("register-from-gw", h("0A 0A 00 2A 12 34 61 2F 62 63"), Register(0x2A, 0x1234, "a/bc")),
    (
        "regack-invalid-topic",
        h("07 0B 00 00 00 07 02"),
        Regack(0, 7, ReturnCode.INVALID_TOPIC_ID),
    ),
    ("publish-qos0", h("08 0C 00 00 05 00 00 68"), Publish(5, b"h")),
    ("publish-qos0-retain", h("08 0C 10 00 01 00 00 7A"), Publish(1, b"z", retain=True)),
    (
        "publish-qos2-dup-retain",
        h("09 0C D0 12 34 AB CD 01 02"),
        Publish(0x1234, h("01 02"), qos=2, msg_id=0xABCD, retain=True, dup=True),
    ),
    (
        "publish-qos1-dup",
        h("07 0C A0 00 03 00 09"),
        Publish(3, b"", qos=1, msg_id=9, dup=True),
    ),
    (
        "publish-qos0-predefined-empty",
        h("07 0C 01 00 02 00 00"),
        Publish(2, b"", topic_id_type=TopicIdType.PREDEFINED),
    ),
    (
        "publish-qos2-short",
        h("08 0C 42 7A 7A 00 05 FF"),
        Publish(0x7A7A, h("FF"), qos=2, msg_id=5, topic_id_type=TopicIdType.SHORT),
    ),
    (
        "publish-qos-1-short-retain",
        h("07 0C 72 61 62 00 00"),
        Publish(0x6162, b"", qos=-1, retain=True, topic_id_type=TopicIdType.SHORT),
    ),
    ("puback-invalid-topic", h("07 0D 00 09 00 00 02"), Puback(9, 0, 2)),
    ("puback-congestion", h("07 0D FF FF FF FF 01"), Puback(0xFFFF, 0xFFFF, 1)),
    ("subscribe-name-qos1", h("09 12 20 00 01 73 6E 2F 61"), Subscribe(1, "sn/a", qos=1)),
    (
        "subscribe-wildcard-dup",
        h("09 12 80 01 02 73 6E 2F 23"),
        Subscribe(0x0102, "sn/#", dup=True),
    ),
    ("subscribe-plus-qos2", h("08 12 40 00 03 2B 2F 78"), Subscribe(3, "+/x", qos=2)),
    (
        "subscribe-predefined",
        h("07 12 41 00 04 00 07"),
        Subscribe(4, 7, qos=2, topic_id_type=TopicIdType.PREDEFINED),
    ),
    (
        "subscribe-short",
        h("07 12 22 00 05 7A 7A"),
        Subscribe(5, "zz", qos=1, topic_id_type=TopicIdType.SHORT),
    ),
    (
        "subscribe-two-char-normal-name",
        h("07 12 00 00 06 7A 7A"),
        Subscribe(6, "zz"),
    ),
    ("suback-qos1", h("08 13 20 00 01 00 01 00"), Suback(1, 1, qos=1)),
    ("suback-wildcard", h("08 13 00 00 00 00 02 00"), Suback(0, 2)),
    ("suback-rejected", h("08 13 40 00 00 00 03 03"), Suback(0, 3, 2, ReturnCode.NOT_SUPPORTED)),
    ("unsubscribe-name", h("09 14 00 00 06 73 6E 2F 23"), Unsubscribe(6, "sn/#")),
    (
        "unsubscribe-predefined",
        h("07 14 01 00 07 01 02"),
        Unsubscribe(7, 0x0102, TopicIdType.PREDEFINED),
    ),
    ("unsubscribe-short", h("07 14 02 00 08 61 62"), Unsubscribe(8, "ab", TopicIdType.SHORT)),
    ("unsuback", h("04 15 00 06"), Unsuback(6)),
    ("pingreq", h("02 16"), Pingreq()),
    ("pingreq-client-id", h("03 16 63"), Pingreq("c")),
    ("pingresp", h("02 17"), Pingresp()),
    ("disconnect-duration-max", h("04 18 FF FF"), Disconnect(65535)),
    ("disconnect-duration-zero", h("04 18 00 00"), Disconnect(0)),
    ("willtopicupd", h("06 1A 50 77 2F 74"), WillTopicUpd("w/t", qos=2, retain=True)),
    ("willtopicupd-qos0", h("04 1A 00 77"), WillTopicUpd("w")),
    ("willtopicupd-empty", h("02 1A"), WillTopicUpd()),
    ("willtopicresp", h("03 1B 00"), WillTopicResp()),
    ("willtopicresp-not-supported", h("03 1B 03"), WillTopicResp(ReturnCode.NOT_SUPPORTED)),
    ("willmsgupd", h("05 1C 62 79 65"), WillMsgUpd(b"bye")),
    ("willmsgupd-empty", h("02 1C"), WillMsgUpd()),
    ("willmsgresp", h("03 1D 00"), WillMsgResp()),
    ("willmsgresp-not-supported", h("03 1D 03"), WillMsgResp(ReturnCode.NOT_SUPPORTED)),
    (
        "encapsulated-radius3-no-node-id",
        h("03 FE 03 02 17"),
        Encapsulated(b"", h("02 17"), radius=3),
    ),
    (
        "encapsulated-binary-node-id",
        h("05 FE 01 00 FF 04 0F 00 02"),
        Encapsulated(h("00 FF"), h("04 0F 00 02"), radius=1),
    ),
    (
        # The inner packet may itself use the 3-byte length form; only the header is 1-byte.
        "encapsulated-3-byte-inner",
        h("04 FE 00 2A 01 02 61 0C 20 00 01 00 03") + PAYLOAD_600,
        Encapsulated(h("2A"), h("01 02 61 0C 20 00 01 00 03") + PAYLOAD_600),
    ),
]


@pytest.mark.parametrize(("wire", "packet"), [(w, p) for _, w, p in GOLDEN], ids=[i for i, _, _ in GOLDEN])
def test_golden_encode(wire: bytes, packet: Packet) -> None:
    assert encode(packet) == wire


@pytest.mark.parametrize(("wire", "packet"), [(w, p) for _, w, p in GOLDEN], ids=[i for i, _, _ in GOLDEN])
def test_golden_decode(wire: bytes, packet: Packet) -> None:
    got = decode(wire)
    assert type(got) is type(packet)
    assert got == packet


def test_golden_covers_every_message_type() -> None:
    covered = {p.msg_type for _, _, p in GOLDEN}
    assert covered == set(MsgType)


def test_golden_wire_lengths_are_self_consistent() -> None:
    for name, wire, packet in GOLDEN:
        if isinstance(packet, Encapsulated):
            assert wire[0] == 3 + len(packet.node_id), name
            continue
        length, header, msg_type = peek_header(wire)
        assert (length, msg_type) == (len(wire), packet.msg_type), name
        assert header == (4 if len(wire) > 255 else 2), name


def test_paho_encapsulated_inner_is_the_paho_connect() -> None:
    outer = decode(h("07 FE 00 34 36 36 30") + PAHO_FWD_INNER)
    assert isinstance(outer, Encapsulated)
    assert outer.node_id == b"4660"
    assert outer.radius == 0
    assert decode(outer.inner) == Connect("fwdnode1", 10, clean_session=True)


def test_paho_fixed_sizes() -> None:
    # §3.2 "fixed sizes worth asserting"
    sizes: list[tuple[Packet, int]] = [
        (Connack(), 3),
        (Regack(1, 1), 7),
        (Puback(1, 1), 7),
        (Pubrec(1), 4),
        (Pubrel(1), 4),
        (Pubcomp(1), 4),
        (Unsuback(1), 4),
        (Suback(1, 1), 8),
        (Pingresp(), 2),
        (Disconnect(), 2),
        (Disconnect(1), 4),
        (Advertise(1, 1), 5),
        (SearchGw(1), 3),
        (GwInfo(1), 3),
        (WillTopicReq(), 2),
        (WillMsgReq(), 2),
        (WillTopicResp(), 3),
        (WillMsgResp(), 3),
    ]
    for packet, size in sizes:
        assert len(encode(packet)) == size, packet


# ---------------------------------------------------------------------------------------------
# Length forms


def _publish_with_total(total_1byte: int) -> Publish:
    """A QoS 0 PUBLISH whose 1-byte-length encoding would be ``total_1byte`` bytes."""
    return Publish(1, b"\xab" * (total_1byte - 7))


def test_length_255_uses_one_byte_form() -> None:
    wire = encode(_publish_with_total(255))
    assert wire[:2] == h("FF 0C")
    assert len(wire) == 255
    assert decode(wire) == _publish_with_total(255)


def test_length_256_switches_to_three_byte_form() -> None:
    # 249 bytes of data: 256 with a 1-byte length, which does not fit, so 258 with 3 bytes.
    packet = _publish_with_total(256)
    wire = encode(packet)
    assert wire[:4] == h("01 01 02 0C")
    assert len(wire) == 258
    assert decode(wire) == packet


def test_three_byte_form_accepted_for_short_packets() -> None:
    assert decode(h("01 00 04 17")) == Pingresp()
    assert decode(h("01 00 05 05 00")) == Connack()
    publish = decode(h("01 00 0A 0C 20 00 01 00 02 68"))
    assert publish == Publish(1, b"h", qos=1, msg_id=2)
    # ... and re-encoded in the canonical 1-byte form.
    assert encode(publish) == h("08 0C 20 00 01 00 02 68")


def test_largest_packet_encodes_and_decodes() -> None:
    packet = Publish(1, bytes(MAX_PACKET_SIZE - 9))
    wire = encode(packet)
    assert len(wire) == MAX_PACKET_SIZE
    assert wire[:4] == h("01 FF FF 0C")
    assert decode(wire) == packet


@pytest.mark.parametrize(
    "packet",
    [
        Publish(1, bytes(MAX_PACKET_SIZE - 8)),
        Publish(1, bytes(70000)),
        GwInfo(1, bytes(MAX_PACKET_SIZE)),
        WillMsg(bytes(MAX_PACKET_SIZE - 3)),
        WillMsgUpd(bytes(MAX_PACKET_SIZE)),
        Connect("x" * 65530, 1),
        Register(1, 1, "t" * MAX_PACKET_SIZE),
    ],
    ids=["publish-65536", "publish-70000", "gwinfo", "willmsg", "willmsgupd", "connect", "reg"],
)
def test_oversize_packet_raises_on_encode(packet: Packet) -> None:
    with pytest.raises(LocalProtocolError, match="65535"):
        encode(packet)


def test_peek_header() -> None:
    assert peek_header(h("07 0B 00 01 00 01 00")) == (7, 2, MsgType.REGACK)
    assert peek_header(h("01 02 61 0C 20")) == (0x261, 4, MsgType.PUBLISH)
    # It reads the header only: the declared length need not match the data.
    assert peek_header(h("FF 0C")) == (255, 2, MsgType.PUBLISH)
    for bad in (b"", h("05"), h("00 0C"), h("01 02 61"), h("01 00 03 0C")):
        with pytest.raises(DecodeError):
            peek_header(bad)


def test_decode_accepts_bytes_like() -> None:
    assert decode(bytearray(h("02 17"))) == Pingresp()  # type: ignore[arg-type]
    assert decode(memoryview(h("04 18 00 14"))) == Disconnect(20)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies, one per packet class

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
rc = st.one_of(st.sampled_from(ReturnCode), u8)
text = st.text(max_size=24)
nonempty_text = st.text(min_size=1, max_size=24)
topic_filter = st.one_of(
    nonempty_text,
    st.lists(st.sampled_from(["sn", "+", "#", "a", "ota", "é", ""]), min_size=1, max_size=5)
    .map("/".join)
    .filter(bool),
)
short_name = st.one_of(
    st.text(st.characters(max_codepoint=0x7F), min_size=2, max_size=2),
    # One character of two UTF-8 bytes is a short topic name as well.
    st.characters(min_codepoint=0x80, max_codepoint=0x7FF),
)
# Mostly small payloads, sometimes large enough for the 3-byte length form.
payload = st.one_of(st.binary(max_size=32), st.binary(min_size=240, max_size=600))


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.sampled_from([-1, 0, 1, 2]))
    kinds = [TopicIdType.PREDEFINED, TopicIdType.SHORT]
    if qos != -1:
        kinds.append(TopicIdType.NORMAL)
    kind = draw(st.sampled_from(kinds))
    topic_id = short_topic_id(draw(short_name)) if kind == TopicIdType.SHORT else draw(u16)
    return Publish(
        topic_id,
        draw(payload),
        qos=qos,
        msg_id=draw(u16),
        retain=draw(st.booleans()),
        dup=draw(st.booleans()),
        topic_id_type=kind,
    )


@st.composite
def topic_refs(draw: st.DrawFn) -> tuple[str | int, TopicIdType]:
    kind = draw(st.sampled_from(TopicIdType))
    if kind == TopicIdType.PREDEFINED:
        return draw(u16), kind
    if kind == TopicIdType.SHORT:
        return draw(short_name), kind
    return draw(topic_filter), kind


@st.composite
def subscribes(draw: st.DrawFn) -> Subscribe:
    topic, kind = draw(topic_refs())
    return Subscribe(draw(u16), topic, draw(st.sampled_from([0, 1, 2])), draw(st.booleans()), kind)


@st.composite
def unsubscribes(draw: st.DrawFn) -> Unsubscribe:
    topic, kind = draw(topic_refs())
    return Unsubscribe(draw(u16), topic, kind)


def will_topics(cls: type[WillTopic] | type[WillTopicUpd]) -> st.SearchStrategy[Packet]:
    return st.one_of(
        st.just(cls()),
        st.builds(cls, nonempty_text, st.sampled_from([0, 1, 2]), st.booleans()),
    )


PLAIN_STRATEGIES: dict[type[Packet], st.SearchStrategy[Any]] = {
    Advertise: st.builds(Advertise, u8, u16),
    SearchGw: st.builds(SearchGw, u8),
    GwInfo: st.builds(GwInfo, u8, st.one_of(st.just(b""), st.binary(max_size=16))),
    Connect: st.builds(Connect, nonempty_text, u16, st.booleans(), st.booleans(), u8),
    Connack: st.builds(Connack, rc),
    WillTopicReq: st.just(WillTopicReq()),
    WillTopic: will_topics(WillTopic),
    WillMsgReq: st.just(WillMsgReq()),
    WillMsg: st.builds(WillMsg, payload),
    Register: st.builds(Register, u16, u16, topic_filter),
    Regack: st.builds(Regack, u16, u16, rc),
    Publish: publishes(),
    Puback: st.builds(Puback, u16, u16, rc),
    Pubrec: st.builds(Pubrec, u16),
    Pubrel: st.builds(Pubrel, u16),
    Pubcomp: st.builds(Pubcomp, u16),
    Subscribe: subscribes(),
    Suback: st.builds(Suback, u16, u16, st.sampled_from([0, 1, 2]), rc),
    Unsubscribe: unsubscribes(),
    Unsuback: st.builds(Unsuback, u16),
    Pingreq: st.builds(Pingreq, st.one_of(st.none(), nonempty_text)),
    Pingresp: st.just(Pingresp()),
    Disconnect: st.builds(Disconnect, st.one_of(st.none(), u16)),
    WillTopicUpd: will_topics(WillTopicUpd),
    WillTopicResp: st.builds(WillTopicResp, rc),
    WillMsgUpd: st.builds(WillMsgUpd, payload),
    WillMsgResp: st.builds(WillMsgResp, rc),
}
plain_packets: st.SearchStrategy[Packet] = st.one_of(*PLAIN_STRATEGIES.values())

encapsulations = st.builds(
    Encapsulated,
    st.one_of(st.binary(max_size=8), st.binary(min_size=250, max_size=252)),
    # Plain v1.2 carries an MQTT-SN packet; a blind relay may carry any opaque record (DTLS).
    st.one_of(plain_packets.map(encode), st.binary(min_size=1, max_size=64)),
    st.integers(0, 3),
)

STRATEGIES: dict[type[Packet], st.SearchStrategy[Any]] = {
    **PLAIN_STRATEGIES,
    Encapsulated: encapsulations,
}
packets: st.SearchStrategy[Packet] = st.one_of(*STRATEGIES.values())


def test_every_packet_class_has_a_strategy() -> None:
    exported = {
        obj
        for name in mqttsn.__all__
        if isinstance(obj := getattr(mqttsn, name), type) and issubclass(obj, Packet) and obj is not Packet
    }
    assert exported == set(STRATEGIES)
    assert {cls.msg_type for cls in exported} == set(MsgType)


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_per_class(cls: type[Packet], data: st.DataObject) -> None:
    packet = data.draw(STRATEGIES[cls])
    assert type(packet) is cls
    wire = encode(packet)
    got = decode(wire)
    assert type(got) is cls
    assert got == packet
    if cls is Encapsulated:
        assert wire[1] == MsgType.ENCAPSULATED
    else:
        length, header, msg_type = peek_header(wire)
        assert (length, msg_type) == (len(wire), cls.msg_type)
        # Senders use the 1-byte form whenever the packet fits in it.
        assert header == (2 if len(wire) <= 255 else 4)


@settings(max_examples=300, deadline=None)
@given(packets)
def test_round_trip_any(packet: Packet) -> None:
    assert decode(encode(packet)) == packet


# ---------------------------------------------------------------------------------------------
# Garbage: decode returns a Packet or raises DecodeError, nothing else


def check_decode(data: bytes) -> None:
    try:
        packet = decode(data)
    except DecodeError:
        return
    # Whatever decode accepts is a valid packet: it encodes and comes back the same.
    assert isinstance(packet, Packet)
    assert decode(encode(packet)) == packet


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(st.sampled_from(sorted(MsgType)), u8),
    st.binary(max_size=40),
    st.booleans(),
)
def test_garbage_correctly_framed_bodies(msg_type: int, body: bytes, long_form: bool) -> None:
    # A correct length field gets random bodies past the header check into every decoder.
    if long_form:
        data = b"\x01" + (len(body) + 4).to_bytes(2, "big") + bytes((msg_type,)) + body
    else:
        data = bytes((len(body) + 2, msg_type)) + body
    check_decode(data)


def _flip_bit(data: st.DataObject, wire: bytes) -> bytes:
    i = data.draw(st.integers(0, len(wire) - 1))
    bit = data.draw(st.integers(0, 7))
    out = bytearray(wire)
    out[i] ^= 1 << bit
    return bytes(out)


def _set_byte(data: st.DataObject, wire: bytes) -> bytes:
    i = data.draw(st.integers(0, len(wire) - 1))
    out = bytearray(wire)
    out[i] = data.draw(u8)
    return bytes(out)


def _truncate(data: st.DataObject, wire: bytes) -> bytes:
    return wire[: data.draw(st.integers(0, len(wire) - 1))]


def _extend(data: st.DataObject, wire: bytes) -> bytes:
    return wire + data.draw(st.binary(min_size=1, max_size=8))


def _insert(data: st.DataObject, wire: bytes) -> bytes:
    i = data.draw(st.integers(0, len(wire)))
    return wire[:i] + data.draw(st.binary(min_size=1, max_size=3)) + wire[i:]


def _delete(data: st.DataObject, wire: bytes) -> bytes:
    i = data.draw(st.integers(0, len(wire) - 1))
    return wire[:i] + wire[i + 1 :]


def _wrong_length_field(data: st.DataObject, wire: bytes) -> bytes:
    if wire[0] == 0x01:
        return wire[:1] + data.draw(u16).to_bytes(2, "big") + wire[3:]
    return bytes((data.draw(u8),)) + wire[1:]


def _three_byte_form(data: st.DataObject, wire: bytes) -> bytes:
    # Re-frame a 1-byte-length packet in the 3-byte form, with a right or a wrong length.
    if wire[0] == 0x01:
        return wire
    length = len(wire) + 2 + data.draw(st.sampled_from([0, 0, -1, 1, -3]))
    return b"\x01" + max(length, 0).to_bytes(2, "big") + wire[1:]


MUTATIONS: list[Callable[[st.DataObject, bytes], bytes]] = [
    _flip_bit,
    _set_byte,
    _truncate,
    _extend,
    _insert,
    _delete,
    _wrong_length_field,
    _three_byte_form,
]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets, st.data())
def test_garbage_mutated_valid_encodings(packet: Packet, data: st.DataObject) -> None:
    wire = encode(packet)
    for _ in range(data.draw(st.integers(1, 3))):
        if not wire:
            break
        mutate = data.draw(st.sampled_from(MUTATIONS))
        wire = mutate(data, wire)
    check_decode(wire)


# ---------------------------------------------------------------------------------------------
# Specific invalid datagrams

NEGATIVE: list[tuple[str, bytes]] = [
    # header and length
    ("empty", b""),
    ("one-byte", h("05")),
    ("length-0", h("00 17")),
    ("length-1", h("01 17")),
    ("length-0-long", h("00 05 00")),
    ("length-says-3-has-2", h("03 05")),
    ("length-says-2-has-3", h("02 05 00")),
    ("length-says-4-has-2", h("04 17")),
    ("length-too-short-for-publish", h("07 0C 20 00 01 00 02 68")),
    ("length-says-255-has-8", h("FF 0C 20 00 01 00 02 68")),
    ("3-byte-truncated-1", h("01")),
    ("3-byte-truncated-2", h("01 00")),
    ("3-byte-truncated-3", h("01 00 04")),
    ("3-byte-length-below-header", h("01 00 03 17")),
    ("3-byte-length-zero", h("01 00 00 17")),
    ("3-byte-length-mismatch", h("01 00 05 17")),
    ("3-byte-length-short-by-one", h("01 02 60 0C 20 00 01 00 03") + PAYLOAD_600),
    ("3-byte-encapsulation", h("01 00 06 FE 00 02 17")),
    # unknown and reserved message types
    ("type-0x03", h("02 03")),
    ("type-0x11", h("02 11")),
    ("type-0x19", h("02 19")),
    ("type-0x1e", h("02 1E")),
    ("type-0x80", h("03 80 00")),
    ("type-0xfd", h("02 FD")),
    ("type-0xff", h("02 FF")),
    ("type-0x3f-3-byte", h("01 00 04 3F")),
    # topic id types and QoS
    ("publish-topic-type-0b11", h("07 0C 03 00 01 00 00")),
    ("publish-qos1-topic-type-0b11", h("07 0C 23 00 01 00 05")),
    ("publish-qos-1-normal-topic", h("07 0C 60 00 01 00 00")),
    ("publish-qos-1-normal-topic-retain-dup", h("08 0C F0 00 01 00 00 41")),
    ("publish-truncated", h("06 0C 20 00 01 00")),
    ("subscribe-topic-type-0b11", h("07 12 03 00 01 00 01")),
    ("subscribe-qos-1", h("07 12 61 00 01 00 01")),
    ("subscribe-empty-name", h("05 12 00 00 01")),
    ("subscribe-predefined-3-bytes", h("08 12 21 00 01 00 07 00")),
    ("subscribe-predefined-1-byte", h("06 12 21 00 01 07")),
    ("subscribe-short-1-byte", h("06 12 22 00 01 7A")),
    ("subscribe-short-3-bytes", h("08 12 22 00 01 7A 7A 7A")),
    ("subscribe-short-invalid-utf8", h("07 12 02 00 01 FF FE")),
    ("subscribe-name-invalid-utf8", h("06 12 00 00 01 FF")),
    ("subscribe-no-msg-id", h("04 12 00 00")),
    ("unsubscribe-topic-type-0b11", h("07 14 03 00 01 00 01")),
    ("unsubscribe-empty-name", h("05 14 00 00 01")),
    ("unsubscribe-name-surrogate-utf8", h("08 14 00 00 01 ED A0 80")),
    ("unsubscribe-short-invalid-utf8", h("07 14 02 00 01 C3 28")),
    ("suback-qos-1", h("08 13 60 00 01 00 01 00")),
    ("suback-short", h("07 13 20 00 01 00 01")),
    ("suback-long", h("09 13 20 00 01 00 01 00 00")),
    # text fields
    ("connect-client-id-invalid-utf8", h("07 04 04 01 00 0A FF")),
    ("connect-client-id-truncated-utf8", h("08 04 04 01 00 0A 61 C3")),
    ("connect-no-client-id", h("06 04 04 01 00 0A")),
    ("connect-truncated", h("05 04 04 01 00")),
    ("pingreq-client-id-invalid-utf8", h("03 16 FF")),
    ("register-name-invalid-utf8", h("07 0A 00 00 00 01 C3")),
    ("register-empty-name", h("06 0A 00 00 00 01")),
    ("register-truncated", h("05 0A 00 00 00")),
    ("willtopic-invalid-utf8", h("04 07 00 80")),
    ("willtopic-flags-without-topic", h("03 07 00")),
    ("willtopic-qos-1", h("04 07 60 74")),
    ("willtopicupd-invalid-utf8", h("04 1A 00 FE")),
    ("willtopicupd-flags-without-topic", h("03 1A 30")),
    ("willtopicupd-qos-1", h("04 1A 70 74")),
    # fixed-size bodies: short and long
    ("advertise-short", h("04 00 01 03")),
    ("advertise-long", h("06 00 01 03 84 00")),
    ("searchgw-empty", h("02 01")),
    ("searchgw-long", h("04 01 01 01")),
    ("gwinfo-empty", h("02 02")),
    ("connack-empty", h("02 05")),
    ("connack-long", h("04 05 00 00")),
    ("willtopicreq-long", h("03 06 00")),
    ("willmsgreq-long", h("03 08 00")),
    ("regack-short", h("06 0B 00 01 00 01")),
    ("regack-long", h("08 0B 00 01 00 01 00 00")),
    ("puback-short", h("06 0D 00 01 00 02")),
    ("pubrec-short", h("03 0F 00")),
    ("pubrel-long", h("05 10 00 02 00")),
    ("pubcomp-empty", h("02 0E")),
    ("unsuback-long", h("05 15 00 06 00")),
    ("pingresp-long", h("03 17 00")),
    ("disconnect-3-bytes", h("03 18 00")),
    ("disconnect-5-bytes", h("05 18 00 14 00")),
    ("willtopicresp-empty", h("02 1B")),
    ("willmsgresp-long", h("04 1D 00 00")),
    # forwarder encapsulation
    ("encap-reserved-ctrl-bit-2", h("07 FE 04 34 36 36 30 02 17")),
    ("encap-reserved-ctrl-bit-7", h("03 FE 80 02 17")),
    ("encap-reserved-ctrl-all", h("03 FE FF 02 17")),
    ("encap-no-inner", h("07 FE 00 34 36 36 30")),
    ("encap-no-inner-no-node", h("03 FE 00")),
    ("encap-header-beyond-data", h("09 FE 00 34")),
    ("encap-header-length-2", h("02 FE 00 02 17")),
    ("encap-header-only-2-bytes", h("03 FE")),
]


@pytest.mark.parametrize("data", [d for _, d in NEGATIVE], ids=[i for i, _ in NEGATIVE])
def test_invalid_datagram_raises_decode_error(data: bytes) -> None:
    assert_decode_error(data)


def test_decode_error_is_a_remote_protocol_error() -> None:
    err = assert_decode_error(h("07 0C 03 00 01 00 00"))
    assert isinstance(err, RemoteProtocolError)
    assert isinstance(err, mqttsn.MqttSnError)
    assert "reserved" in str(err)


def test_encapsulation_does_not_validate_its_inner_bytes() -> None:
    # The inner part is opaque (a DTLS record through a blind relay): any non-empty bytes go.
    got = decode(h("04 FE 02 09 17 FE FD 00"))
    assert got == Encapsulated(h("09"), h("17 FE FD 00"), radius=2)


def test_trailing_bytes_are_rejected_not_ignored() -> None:
    # Paho ignores bytes past Length; we require the length to match the datagram.
    assert_decode_error(h("03 05 00 00"))
    assert_decode_error(h("02 17 00"))


# ---------------------------------------------------------------------------------------------
# Construction validation: fields that cannot be encoded raise LocalProtocolError

INVALID: list[tuple[str, Callable[[], object]]] = [
    ("msg-id-70000", lambda: Pubrec(70000)),
    ("msg-id-negative", lambda: Pubrel(-1)),
    ("msg-id-str", lambda: Pubcomp("1")),  # type: ignore[arg-type]
    ("unsuback-msg-id", lambda: Unsuback(65536)),
    ("publish-qos-3", lambda: Publish(1, b"", qos=3)),
    ("publish-qos-minus-2", lambda: Publish(1, b"", qos=-2)),
    ("publish-qos-float", lambda: Publish(1, b"", qos=1.0)),  # type: ignore[arg-type]
    ("publish-qos-bool", lambda: Publish(1, b"", qos=True)),
    ("publish-qos-1-normal", lambda: Publish(1, b"", qos=-1)),
    ("publish-topic-type-3", lambda: Publish(1, b"", topic_id_type=3)),  # type: ignore[arg-type]
    ("publish-topic-id-65536", lambda: Publish(65536, b"")),
    ("publish-data-str", lambda: Publish(1, "x")),  # type: ignore[arg-type]
    ("publish-data-bytearray", lambda: Publish(1, bytearray(b"x"))),  # type: ignore[arg-type]
    ("publish-msg-id-70000", lambda: Publish(1, b"", qos=1, msg_id=70000)),
    ("advertise-gw-id-256", lambda: Advertise(256, 1)),
    ("advertise-duration-65536", lambda: Advertise(1, 65536)),
    ("searchgw-radius-negative", lambda: SearchGw(-1)),
    ("gwinfo-gw-add-str", lambda: GwInfo(1, "10.0.0.1")),  # type: ignore[arg-type]
    ("connect-empty-client-id", lambda: Connect("", 10)),
    ("connect-client-id-bytes", lambda: Connect(b"c", 10)),  # type: ignore[arg-type]
    ("connect-client-id-surrogate", lambda: Connect("\ud800", 10)),
    ("connect-duration-65536", lambda: Connect("c", 65536)),
    ("connect-protocol-id-256", lambda: Connect("c", 1, protocol_id=256)),
    ("connack-rc-256", lambda: Connack(256)),
    ("connack-rc-negative", lambda: Connack(-1)),
    ("connack-rc-str", lambda: Connack("0")),  # type: ignore[arg-type]
    ("regack-rc-256", lambda: Regack(1, 1, 256)),
    ("puback-topic-id-negative", lambda: Puback(-1, 1)),
    ("willtopicresp-rc-300", lambda: WillTopicResp(300)),
    ("willmsgresp-rc-none", lambda: WillMsgResp(None)),  # type: ignore[arg-type]
    ("willtopic-qos-minus-1", lambda: WillTopic("t", qos=-1)),
    ("willtopic-qos-3", lambda: WillTopic("t", qos=3)),
    ("willtopic-bytes", lambda: WillTopic(b"t")),  # type: ignore[arg-type]
    ("willtopic-empty-with-qos", lambda: WillTopic("", qos=1)),
    ("willtopic-empty-with-retain", lambda: WillTopic("", retain=True)),
    ("willtopicupd-empty-with-qos", lambda: WillTopicUpd("", qos=2)),
    ("willtopicupd-qos-3", lambda: WillTopicUpd("t", qos=3)),
    ("willmsg-str", lambda: WillMsg("bye")),  # type: ignore[arg-type]
    ("willmsgupd-str", lambda: WillMsgUpd("bye")),  # type: ignore[arg-type]
    ("register-empty-name", lambda: Register(0, 1, "")),
    ("register-name-bytes", lambda: Register(0, 1, b"t")),  # type: ignore[arg-type]
    ("register-topic-id-65536", lambda: Register(65536, 1, "t")),
    ("subscribe-short-3-chars", lambda: Subscribe(1, "abc", topic_id_type=TopicIdType.SHORT)),
    ("subscribe-short-1-char", lambda: Subscribe(1, "a", topic_id_type=TopicIdType.SHORT)),
    ("subscribe-short-3-bytes", lambda: Subscribe(1, "aé", topic_id_type=TopicIdType.SHORT)),
    (
        "subscribe-short-surrogate",
        lambda: Subscribe(1, "\ud800", topic_id_type=TopicIdType.SHORT),
    ),
    ("subscribe-short-int", lambda: Subscribe(1, 0x6162, topic_id_type=TopicIdType.SHORT)),
    ("subscribe-normal-empty", lambda: Subscribe(1, "")),
    ("subscribe-normal-int", lambda: Subscribe(1, 5)),
    ("subscribe-normal-surrogate", lambda: Subscribe(1, "a/\udc80")),
    ("subscribe-predefined-str", lambda: Subscribe(1, "5", topic_id_type=TopicIdType.PREDEFINED)),
    ("subscribe-predefined-bool", lambda: Subscribe(1, True, topic_id_type=TopicIdType.PREDEFINED)),
    (
        "subscribe-predefined-65536",
        lambda: Subscribe(1, 65536, topic_id_type=TopicIdType.PREDEFINED),
    ),
    ("subscribe-topic-type-3", lambda: Subscribe(1, "a", topic_id_type=3)),  # type: ignore[arg-type]
    ("subscribe-qos-minus-1", lambda: Subscribe(1, "a", qos=-1)),
    ("subscribe-msg-id-70000", lambda: Subscribe(70000, "a")),
    ("suback-qos-minus-1", lambda: Suback(1, 1, qos=-1)),
    ("suback-qos-3", lambda: Suback(1, 1, qos=3)),
    ("unsubscribe-short-3-chars", lambda: Unsubscribe(1, "abc", TopicIdType.SHORT)),
    ("unsubscribe-normal-empty", lambda: Unsubscribe(1, "")),
    ("unsubscribe-predefined-negative", lambda: Unsubscribe(1, -1, TopicIdType.PREDEFINED)),
    ("pingreq-empty-client-id", lambda: Pingreq("")),
    ("pingreq-client-id-bytes", lambda: Pingreq(b"c")),  # type: ignore[arg-type]
    ("disconnect-duration-negative", lambda: Disconnect(-1)),
    ("disconnect-duration-65536", lambda: Disconnect(65536)),
    ("encap-radius-4", lambda: Encapsulated(b"", b"\x02\x17", radius=4)),
    ("encap-radius-negative", lambda: Encapsulated(b"", b"\x02\x17", radius=-1)),
    ("encap-radius-str", lambda: Encapsulated(b"", b"\x02\x17", radius="1")),  # type: ignore[arg-type]
    ("encap-node-id-253", lambda: Encapsulated(bytes(253), b"\x02\x17")),
    ("encap-node-id-str", lambda: Encapsulated("4660", b"\x02\x17")),  # type: ignore[arg-type]
    ("encap-inner-empty", lambda: Encapsulated(b"4660", b"")),
    ("short-topic-id-3-chars", lambda: short_topic_id("abc")),
    ("short-topic-id-empty", lambda: short_topic_id("")),
    ("short-topic-id-int", lambda: short_topic_id(5)),  # type: ignore[arg-type]
    ("short-topic-name-too-big", lambda: short_topic_name(70000)),
    ("short-topic-name-negative", lambda: short_topic_name(-1)),
]


@pytest.mark.parametrize("build", [b for _, b in INVALID], ids=[i for i, _ in INVALID])
def test_invalid_fields_raise_local_protocol_error(build: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        build()


def test_local_protocol_error_is_a_value_error_not_a_decode_error() -> None:
    with pytest.raises(ValueError) as info:
        Pubrec(70000)
    assert isinstance(info.value, LocalProtocolError)
    assert not isinstance(info.value, RemoteProtocolError)


def test_boundary_values_are_accepted() -> None:
    widest = Encapsulated(bytes(252), b"\x02\x17", radius=3)
    assert encode(widest)[:3] == h("FF FE 03")
    assert decode(encode(widest)) == widest
    assert encode(Connect("c" * 23, 0))[0] == 29
    assert encode(Publish(0xFFFF, b"", qos=2, msg_id=0xFFFF)) == h("07 0C 40 FF FF FF FF")


def test_packets_are_frozen() -> None:
    packet = Publish(1, b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.qos = 1  # type: ignore[misc]


def test_short_topic_helpers() -> None:
    assert short_topic_id("ab") == 0x6162
    assert short_topic_id("zz") == 0x7A7A
    assert short_topic_name(0x7A7A) == "zz"
    assert short_topic_id("é") == 0xC3A9
    assert short_topic_name(0xC3A9) == "é"
    # Session code catches exactly UnicodeDecodeError for ids that carry no UTF-8 name.
    with pytest.raises(UnicodeDecodeError):
        short_topic_name(0xFFFF)
    with pytest.raises(UnicodeDecodeError):
        short_topic_name(0x61C3)


@settings(max_examples=100, deadline=None)
@given(short_name)
def test_short_topic_helpers_round_trip(name: str) -> None:
    assert short_topic_name(short_topic_id(name)) == name
