"""Encode and decode MQTT-SN v1.2 packets.

Length: one octet when the whole packet is at most 255 bytes, else 0x01 followed by two octets
(the length always counts itself). The decoder accepts both forms and requires the length to
match the datagram. The only exception the decoder raises is :class:`DecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable

from ._errors import DecodeError, LocalProtocolError
from ._packets import (
    Advertise,
    Connack,
    Connect,
    Disconnect,
    Encapsulated,
    GwInfo,
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
    short_topic_id,
    short_topic_name,
)

__all__ = ["MAX_PACKET_SIZE", "decode", "encode", "peek_header"]

MAX_PACKET_SIZE = 0xFFFF

_DUP = 0x80
_RETAIN = 0x10
_WILL = 0x08
_CLEAN = 0x04


def _qos_bits(qos: int) -> int:
    return (0b11 if qos == -1 else qos) << 5


def _flags_qos(flags: int) -> int:
    bits = (flags >> 5) & 0b11
    return -1 if bits == 0b11 else bits


def _frame(msg_type: int, body: bytes) -> bytes:
    total = len(body) + 2
    if total <= 0xFF:
        return bytes((total, msg_type)) + body
    total += 2
    if total > MAX_PACKET_SIZE:
        raise LocalProtocolError(f"packet of {total} bytes exceeds the 65535-byte MQTT-SN limit")
    return b"\x01" + total.to_bytes(2, "big") + bytes((msg_type,)) + body


def _u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def _topic_field(topic: str | int, tit: TopicIdType) -> bytes:
    if tit == TopicIdType.PREDEFINED:
        assert isinstance(topic, int)
        return _u16(topic)
    assert isinstance(topic, str)
    if tit == TopicIdType.SHORT:
        return _u16(short_topic_id(topic))
    return topic.encode("utf-8")


def _will_flags(qos: int, retain: bool) -> int:
    return _qos_bits(qos) | (_RETAIN if retain else 0)


def encode(packet: Packet) -> bytes:
    """Serialize one packet to its wire bytes."""
    t = packet.msg_type
    body: bytes
    if isinstance(packet, Advertise):
        body = bytes((packet.gw_id,)) + _u16(packet.duration)
    elif isinstance(packet, SearchGw):
        body = bytes((packet.radius,))
    elif isinstance(packet, GwInfo):
        body = bytes((packet.gw_id,)) + packet.gw_add
    elif isinstance(packet, Connect):
        flags = (_WILL if packet.will else 0) | (_CLEAN if packet.clean_session else 0)
        body = (
            bytes((flags, packet.protocol_id))
            + _u16(packet.duration)
            + packet.client_id.encode("utf-8")
        )
    elif isinstance(packet, Connack | WillTopicResp | WillMsgResp):
        body = bytes((packet.return_code,))
    elif isinstance(packet, WillTopicReq | WillMsgReq | Pingresp):
        body = b""
    elif isinstance(packet, WillTopic | WillTopicUpd):
        if packet.topic:
            body = bytes((_will_flags(packet.qos, packet.retain),)) + packet.topic.encode("utf-8")
        else:
            body = b""
    elif isinstance(packet, WillMsg | WillMsgUpd):
        body = packet.message
    elif isinstance(packet, Register):
        body = _u16(packet.topic_id) + _u16(packet.msg_id) + packet.topic_name.encode("utf-8")
    elif isinstance(packet, Regack | Puback):
        body = _u16(packet.topic_id) + _u16(packet.msg_id) + bytes((packet.return_code,))
    elif isinstance(packet, Publish):
        flags = (
            (_DUP if packet.dup else 0)
            | _qos_bits(packet.qos)
            | (_RETAIN if packet.retain else 0)
            | int(packet.topic_id_type)
        )
        body = bytes((flags,)) + _u16(packet.topic_id) + _u16(packet.msg_id) + packet.data
    elif isinstance(packet, Pubrec | Pubrel | Pubcomp | Unsuback):
        body = _u16(packet.msg_id)
    elif isinstance(packet, Subscribe):
        flags = (_DUP if packet.dup else 0) | _qos_bits(packet.qos) | int(packet.topic_id_type)
        body = (
            bytes((flags,))
            + _u16(packet.msg_id)
            + _topic_field(packet.topic, packet.topic_id_type)
        )
    elif isinstance(packet, Suback):
        body = (
            bytes((_qos_bits(packet.qos),))
            + _u16(packet.topic_id)
            + _u16(packet.msg_id)
            + bytes((packet.return_code,))
        )
    elif isinstance(packet, Unsubscribe):
        body = (
            bytes((int(packet.topic_id_type),))
            + _u16(packet.msg_id)
            + _topic_field(packet.topic, packet.topic_id_type)
        )
    elif isinstance(packet, Pingreq):
        body = packet.client_id.encode("utf-8") if packet.client_id else b""
    elif isinstance(packet, Disconnect):
        body = b"" if packet.duration is None else _u16(packet.duration)
    elif isinstance(packet, Encapsulated):
        # The length octet covers only the encapsulation header; the inner packet follows.
        header = bytes((3 + len(packet.node_id), t, packet.radius & 0b11))
        return header + packet.node_id + packet.inner
    else:  # pragma: no cover - every Packet subclass is handled above
        raise LocalProtocolError(f"cannot encode {type(packet).__name__}")
    return _frame(t, body)


def peek_header(data: bytes) -> tuple[int, int, int]:
    """Return (declared length, header size, msg type) of a datagram without decoding the body."""
    if len(data) < 2:
        raise DecodeError(f"datagram of {len(data)} bytes is shorter than any MQTT-SN header")
    if data[0] == 0x01:
        if len(data) < 4:
            raise DecodeError("3-byte length form truncated")
        length = int.from_bytes(data[1:3], "big")
        if length < 4:
            raise DecodeError(f"3-byte length field {length} is smaller than the header")
        return length, 4, data[3]
    if data[0] == 0x00:
        raise DecodeError("length octet 0 is invalid")
    if data[0] < 2:
        raise DecodeError(f"length {data[0]} is smaller than the header")
    return data[0], 2, data[1]


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("packet truncated")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise DecodeError("packet truncated")
        v = int.from_bytes(self.data[self.pos : self.pos + 2], "big")
        self.pos += 2
        return v

    def rest(self) -> bytes:
        v = self.data[self.pos :]
        self.pos = len(self.data)
        return v

    def text(self, what: str) -> str:
        raw = self.rest()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{what} is not valid UTF-8") from exc

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{len(self.data) - self.pos} unexpected trailing bytes")


def _topic_ref(r: _Reader, tit: int, what: str) -> tuple[str | int, TopicIdType]:
    if tit == 0b11:
        raise DecodeError(f"{what}: reserved topic id type 0b11")
    kind = TopicIdType(tit)
    if kind == TopicIdType.PREDEFINED:
        v = r.u16()
        r.end()
        return v, kind
    if kind == TopicIdType.SHORT:
        v = r.u16()
        r.end()
        try:
            return short_topic_name(v), kind
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{what}: short topic name is not valid UTF-8") from exc
    name = r.text("topic name")
    if not name:
        raise DecodeError(f"{what}: empty topic name")
    return name, kind


def _d_advertise(r: _Reader) -> Packet:
    p = Advertise(r.u8(), r.u16())
    r.end()
    return p


def _d_searchgw(r: _Reader) -> Packet:
    p = SearchGw(r.u8())
    r.end()
    return p


def _d_gwinfo(r: _Reader) -> Packet:
    return GwInfo(r.u8(), r.rest())


def _d_connect(r: _Reader) -> Packet:
    flags = r.u8()
    protocol_id = r.u8()
    duration = r.u16()
    client_id = r.text("client id")
    if not client_id:
        raise DecodeError("CONNECT without a client id")
    return Connect(client_id, duration, bool(flags & _CLEAN), bool(flags & _WILL), protocol_id)


def _d_rc_only(
    cls: type[Connack] | type[WillTopicResp] | type[WillMsgResp],
) -> Callable[[_Reader], Packet]:
    def dec(r: _Reader) -> Packet:
        p = cls(r.u8())
        r.end()
        return p

    return dec


def _d_empty(
    cls: type[WillTopicReq] | type[WillMsgReq] | type[Pingresp],
) -> Callable[[_Reader], Packet]:
    def dec(r: _Reader) -> Packet:
        r.end()
        return cls()

    return dec


def _d_willtopic(cls: type[WillTopic] | type[WillTopicUpd]) -> Callable[[_Reader], Packet]:
    def dec(r: _Reader) -> Packet:
        if r.remaining() == 0:
            return cls()
        flags = r.u8()
        qos = _flags_qos(flags)
        if qos == -1:
            raise DecodeError("will QoS -1 is not allowed")
        topic = r.text("will topic")
        if not topic:
            raise DecodeError("will flags present but the will topic is empty")
        return cls(topic, qos, bool(flags & _RETAIN))

    return dec


def _d_willmsg(cls: type[WillMsg] | type[WillMsgUpd]) -> Callable[[_Reader], Packet]:
    def dec(r: _Reader) -> Packet:
        return cls(r.rest())

    return dec


def _d_register(r: _Reader) -> Packet:
    topic_id = r.u16()
    msg_id = r.u16()
    name = r.text("topic name")
    if not name:
        raise DecodeError("REGISTER with an empty topic name")
    return Register(topic_id, msg_id, name)


def _d_id_id_rc(cls: type[Regack] | type[Puback]) -> Callable[[_Reader], Packet]:
    def dec(r: _Reader) -> Packet:
        p = cls(r.u16(), r.u16(), r.u8())
        r.end()
        return p

    return dec


def _d_publish(r: _Reader) -> Packet:
    flags = r.u8()
    tit = flags & 0b11
    if tit == 0b11:
        raise DecodeError("PUBLISH: reserved topic id type 0b11")
    qos = _flags_qos(flags)
    if qos == -1 and tit == TopicIdType.NORMAL:
        raise DecodeError("PUBLISH QoS -1 with a normal topic id")
    topic_id = r.u16()
    msg_id = r.u16()
    return Publish(
        topic_id,
        r.rest(),
        qos,
        msg_id,
        bool(flags & _RETAIN),
        bool(flags & _DUP),
        TopicIdType(tit),
    )


def _d_msgid(
    cls: type[Pubrec] | type[Pubrel] | type[Pubcomp] | type[Unsuback],
) -> Callable[[_Reader], Packet]:
    def dec(r: _Reader) -> Packet:
        p = cls(r.u16())
        r.end()
        return p

    return dec


def _d_subscribe(r: _Reader) -> Packet:
    flags = r.u8()
    qos = _flags_qos(flags)
    if qos == -1:
        raise DecodeError("SUBSCRIBE QoS -1 is not allowed")
    msg_id = r.u16()
    topic, kind = _topic_ref(r, flags & 0b11, "SUBSCRIBE")
    return Subscribe(msg_id, topic, qos, bool(flags & _DUP), kind)


def _d_suback(r: _Reader) -> Packet:
    flags = r.u8()
    qos = _flags_qos(flags)
    if qos == -1:
        raise DecodeError("SUBACK QoS -1 is not allowed")
    p = Suback(r.u16(), r.u16(), qos, r.u8())
    r.end()
    return p


def _d_unsubscribe(r: _Reader) -> Packet:
    flags = r.u8()
    msg_id = r.u16()
    topic, kind = _topic_ref(r, flags & 0b11, "UNSUBSCRIBE")
    return Unsubscribe(msg_id, topic, kind)


def _d_pingreq(r: _Reader) -> Packet:
    if r.remaining() == 0:
        return Pingreq()
    return Pingreq(r.text("client id"))


def _d_disconnect(r: _Reader) -> Packet:
    if r.remaining() == 0:
        return Disconnect()
    p = Disconnect(r.u16())
    r.end()
    return p


_DECODERS: dict[int, Callable[[_Reader], Packet]] = {
    MsgType.ADVERTISE: _d_advertise,
    MsgType.SEARCHGW: _d_searchgw,
    MsgType.GWINFO: _d_gwinfo,
    MsgType.CONNECT: _d_connect,
    MsgType.CONNACK: _d_rc_only(Connack),
    MsgType.WILLTOPICREQ: _d_empty(WillTopicReq),
    MsgType.WILLTOPIC: _d_willtopic(WillTopic),
    MsgType.WILLMSGREQ: _d_empty(WillMsgReq),
    MsgType.WILLMSG: _d_willmsg(WillMsg),
    MsgType.REGISTER: _d_register,
    MsgType.REGACK: _d_id_id_rc(Regack),
    MsgType.PUBLISH: _d_publish,
    MsgType.PUBACK: _d_id_id_rc(Puback),
    MsgType.PUBCOMP: _d_msgid(Pubcomp),
    MsgType.PUBREC: _d_msgid(Pubrec),
    MsgType.PUBREL: _d_msgid(Pubrel),
    MsgType.SUBSCRIBE: _d_subscribe,
    MsgType.SUBACK: _d_suback,
    MsgType.UNSUBSCRIBE: _d_unsubscribe,
    MsgType.UNSUBACK: _d_msgid(Unsuback),
    MsgType.PINGREQ: _d_pingreq,
    MsgType.PINGRESP: _d_empty(Pingresp),
    MsgType.DISCONNECT: _d_disconnect,
    MsgType.WILLTOPICUPD: _d_willtopic(WillTopicUpd),
    MsgType.WILLTOPICRESP: _d_rc_only(WillTopicResp),
    MsgType.WILLMSGUPD: _d_willmsg(WillMsgUpd),
    MsgType.WILLMSGRESP: _d_rc_only(WillMsgResp),
}


def _decode_encapsulated(data: bytes) -> Encapsulated:
    hdr_len = data[0]
    if hdr_len < 3 or len(data) < hdr_len:
        raise DecodeError(f"encapsulation header length {hdr_len} invalid for {len(data)} bytes")
    ctrl = data[2]
    if ctrl & 0xFC:
        raise DecodeError(f"encapsulation ctrl 0x{ctrl:02x} has reserved bits set")
    inner = data[hdr_len:]
    if not inner:
        raise DecodeError("encapsulation without an inner packet")
    return Encapsulated(data[3:hdr_len], inner, ctrl & 0b11)


def decode(data: bytes) -> Packet:
    """Parse one datagram into a packet, raising DecodeError on anything invalid."""
    data = bytes(data)
    if len(data) >= 2 and data[0] not in (0, 1) and data[1] == MsgType.ENCAPSULATED:
        return _decode_encapsulated(data)
    length, header, msg_type = peek_header(data)
    if length != len(data):
        raise DecodeError(f"length field says {length} bytes, datagram has {len(data)}")
    if msg_type == MsgType.ENCAPSULATED:
        raise DecodeError("forwarder encapsulation must use the 1-byte length form")
    dec = _DECODERS.get(msg_type)
    if dec is None:
        raise DecodeError(f"unknown or reserved message type 0x{msg_type:02x}")
    try:
        return dec(_Reader(data, header))
    except LocalProtocolError as exc:  # a field the packet class refuses
        raise DecodeError(str(exc)) from exc
