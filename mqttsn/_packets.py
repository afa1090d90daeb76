"""MQTT-SN v1.2 packets as frozen dataclasses.

Every packet validates its fields on construction and raises LocalProtocolError when a field
cannot be encoded. The codec (``_codec.py``) turns them into bytes and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from ._errors import LocalProtocolError

__all__ = [
    "Advertise",
    "Connack",
    "Connect",
    "Disconnect",
    "Encapsulated",
    "GwInfo",
    "MsgType",
    "Packet",
    "Pingreq",
    "Pingresp",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "Regack",
    "Register",
    "ReturnCode",
    "SearchGw",
    "Suback",
    "Subscribe",
    "TopicIdType",
    "Unsuback",
    "Unsubscribe",
    "WillMsg",
    "WillMsgReq",
    "WillMsgResp",
    "WillMsgUpd",
    "WillTopic",
    "WillTopicReq",
    "WillTopicResp",
    "WillTopicUpd",
    "short_topic_id",
    "short_topic_name",
]


class MsgType(IntEnum):
    ADVERTISE = 0x00
    SEARCHGW = 0x01
    GWINFO = 0x02
    CONNECT = 0x04
    CONNACK = 0x05
    WILLTOPICREQ = 0x06
    WILLTOPIC = 0x07
    WILLMSGREQ = 0x08
    WILLMSG = 0x09
    REGISTER = 0x0A
    REGACK = 0x0B
    PUBLISH = 0x0C
    PUBACK = 0x0D
    PUBCOMP = 0x0E
    PUBREC = 0x0F
    PUBREL = 0x10
    SUBSCRIBE = 0x12
    SUBACK = 0x13
    UNSUBSCRIBE = 0x14
    UNSUBACK = 0x15
    PINGREQ = 0x16
    PINGRESP = 0x17
    DISCONNECT = 0x18
    WILLTOPICUPD = 0x1A
    WILLTOPICRESP = 0x1B
    WILLMSGUPD = 0x1C
    WILLMSGRESP = 0x1D
    ENCAPSULATED = 0xFE


class ReturnCode(IntEnum):
    ACCEPTED = 0x00
    CONGESTION = 0x01
    INVALID_TOPIC_ID = 0x02
    NOT_SUPPORTED = 0x03


class TopicIdType(IntEnum):
    NORMAL = 0b00  # registered topic id (a topic name in SUBSCRIBE/UNSUBSCRIBE)
    PREDEFINED = 0b01
    SHORT = 0b10  # two characters carried in the topic id field


QOS_VALUES = (-1, 0, 1, 2)


def _u8(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{name} must be 0..255, got {value!r}")


def _u16(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{name} must be 0..65535, got {value!r}")


def _msg_id(value: int) -> None:
    _u16("msg_id", value)


def _qos(value: int, allowed: tuple[int, ...] = QOS_VALUES) -> None:
    # Exact ints only: 1.0 == 1 would pass a membership test and then fail in the encoder.
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise LocalProtocolError(f"qos must be one of {allowed}, got {value!r}")


def _rc(value: int) -> None:
    # No int() coercion: Connack("0") must fail here, not later in encode().
    _u8("return_code", value)


def _text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{name} is not encodable as UTF-8") from exc


def _bytes(name: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, got {type(value).__name__}")


def short_topic_id(name: str) -> int:
    """The topic id field value that carries a two-character short topic name."""
    if not isinstance(name, str):
        raise LocalProtocolError(f"a short topic name is a str, got {type(name).__name__}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"short topic name {name!r} is not encodable as UTF-8") from exc
    if len(raw) != 2:
        raise LocalProtocolError(f"a short topic name is exactly 2 bytes, got {name!r}")
    return int.from_bytes(raw, "big")


def short_topic_name(topic_id: int) -> str:
    """The two-character topic name carried in a short topic id field.

    Raises UnicodeDecodeError when the two bytes are not UTF-8 (callers catch exactly that).
    """
    _u16("topic_id", topic_id)
    return topic_id.to_bytes(2, "big").decode("utf-8", errors="strict")


@dataclass(frozen=True, slots=True)
class Packet:
    """Base of every MQTT-SN packet."""

    msg_type: ClassVar[MsgType]


@dataclass(frozen=True, slots=True)
class Advertise(Packet):
    msg_type: ClassVar[MsgType] = MsgType.ADVERTISE
    gw_id: int
    duration: int

    def __post_init__(self) -> None:
        _u8("gw_id", self.gw_id)
        _u16("duration", self.duration)


@dataclass(frozen=True, slots=True)
class SearchGw(Packet):
    msg_type: ClassVar[MsgType] = MsgType.SEARCHGW
    radius: int = 0

    def __post_init__(self) -> None:
        _u8("radius", self.radius)


@dataclass(frozen=True, slots=True)
class GwInfo(Packet):
    msg_type: ClassVar[MsgType] = MsgType.GWINFO
    gw_id: int
    gw_add: bytes = b""  # present only when a client answers on behalf of a gateway

    def __post_init__(self) -> None:
        _u8("gw_id", self.gw_id)
        _bytes("gw_add", self.gw_add)


@dataclass(frozen=True, slots=True)
class Connect(Packet):
    msg_type: ClassVar[MsgType] = MsgType.CONNECT
    client_id: str
    duration: int
    clean_session: bool = True
    will: bool = False
    protocol_id: int = 0x01

    def __post_init__(self) -> None:
        _text("client_id", self.client_id)
        if not self.client_id.encode("utf-8"):
            raise LocalProtocolError("client_id must not be empty")
        _u16("duration", self.duration)
        _u8("protocol_id", self.protocol_id)


@dataclass(frozen=True, slots=True)
class Connack(Packet):
    msg_type: ClassVar[MsgType] = MsgType.CONNACK
    return_code: int = ReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        _rc(self.return_code)


@dataclass(frozen=True, slots=True)
class WillTopicReq(Packet):
    msg_type: ClassVar[MsgType] = MsgType.WILLTOPICREQ


def _empty_will_has_no_flags(topic: str, qos: int, retain: bool) -> None:
    # The empty form is two bytes with no flags octet: qos/retain would be silently dropped.
    if not topic and (qos or retain):
        raise LocalProtocolError("an empty will topic (delete the will) carries no qos or retain")


@dataclass(frozen=True, slots=True)
class WillTopic(Packet):
    """An empty topic encodes the 2-byte "empty WILLTOPIC" that deletes the will."""

    msg_type: ClassVar[MsgType] = MsgType.WILLTOPIC
    topic: str = ""
    qos: int = 0
    retain: bool = False

    def __post_init__(self) -> None:
        _text("topic", self.topic)
        _qos(self.qos, (0, 1, 2))
        _empty_will_has_no_flags(self.topic, self.qos, self.retain)


@dataclass(frozen=True, slots=True)
class WillMsgReq(Packet):
    msg_type: ClassVar[MsgType] = MsgType.WILLMSGREQ


@dataclass(frozen=True, slots=True)
class WillMsg(Packet):
    msg_type: ClassVar[MsgType] = MsgType.WILLMSG
    message: bytes = b""

    def __post_init__(self) -> None:
        _bytes("message", self.message)


@dataclass(frozen=True, slots=True)
class Register(Packet):
    msg_type: ClassVar[MsgType] = MsgType.REGISTER
    topic_id: int
    msg_id: int
    topic_name: str

    def __post_init__(self) -> None:
        _u16("topic_id", self.topic_id)
        _msg_id(self.msg_id)
        _text("topic_name", self.topic_name)
        if not self.topic_name:
            raise LocalProtocolError("topic_name must not be empty")


@dataclass(frozen=True, slots=True)
class Regack(Packet):
    msg_type: ClassVar[MsgType] = MsgType.REGACK
    topic_id: int
    msg_id: int
    return_code: int = ReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        _u16("topic_id", self.topic_id)
        _msg_id(self.msg_id)
        _rc(self.return_code)


@dataclass(frozen=True, slots=True)
class Publish(Packet):
    msg_type: ClassVar[MsgType] = MsgType.PUBLISH
    topic_id: int
    data: bytes
    qos: int = 0
    msg_id: int = 0
    retain: bool = False
    dup: bool = False
    topic_id_type: TopicIdType = TopicIdType.NORMAL

    def __post_init__(self) -> None:
        _u16("topic_id", self.topic_id)
        _bytes("data", self.data)
        _qos(self.qos)
        _msg_id(self.msg_id)
        if self.topic_id_type not in (0, 1, 2):
            raise LocalProtocolError(f"topic_id_type must be 0, 1 or 2, got {self.topic_id_type!r}")
        if self.qos == -1 and self.topic_id_type == TopicIdType.NORMAL:
            raise LocalProtocolError("QoS -1 needs a predefined topic id or a short topic name")


@dataclass(frozen=True, slots=True)
class Puback(Packet):
    msg_type: ClassVar[MsgType] = MsgType.PUBACK
    topic_id: int
    msg_id: int
    return_code: int = ReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        _u16("topic_id", self.topic_id)
        _msg_id(self.msg_id)
        _rc(self.return_code)


@dataclass(frozen=True, slots=True)
class Pubrec(Packet):
    msg_type: ClassVar[MsgType] = MsgType.PUBREC
    msg_id: int

    def __post_init__(self) -> None:
        _msg_id(self.msg_id)


@dataclass(frozen=True, slots=True)
class Pubrel(Packet):
    msg_type: ClassVar[MsgType] = MsgType.PUBREL
    msg_id: int

    def __post_init__(self) -> None:
        _msg_id(self.msg_id)


@dataclass(frozen=True, slots=True)
class Pubcomp(Packet):
    msg_type: ClassVar[MsgType] = MsgType.PUBCOMP
    msg_id: int

    def __post_init__(self) -> None:
        _msg_id(self.msg_id)


def _check_topic_ref(topic: str | int, topic_id_type: TopicIdType) -> None:
    if topic_id_type == TopicIdType.PREDEFINED:
        if not isinstance(topic, int) or isinstance(topic, bool):
            raise LocalProtocolError("a predefined topic is referenced by an int topic id")
        _u16("topic", topic)
    elif topic_id_type == TopicIdType.SHORT:
        if not isinstance(topic, str):
            raise LocalProtocolError("a short topic is a 2-character str")
        short_topic_id(topic)
    elif topic_id_type == TopicIdType.NORMAL:
        if not isinstance(topic, str) or not topic:
            raise LocalProtocolError("a normal topic is a non-empty topic name or filter")
        _text("topic", topic)
    else:
        raise LocalProtocolError(f"topic_id_type must be 0, 1 or 2, got {topic_id_type!r}")


@dataclass(frozen=True, slots=True)
class Subscribe(Packet):
    """``topic``: a topic name/filter (NORMAL), a 2-char name (SHORT) or an int id (PREDEFINED)."""

    msg_type: ClassVar[MsgType] = MsgType.SUBSCRIBE
    msg_id: int
    topic: str | int
    qos: int = 0
    dup: bool = False
    topic_id_type: TopicIdType = TopicIdType.NORMAL

    def __post_init__(self) -> None:
        _msg_id(self.msg_id)
        _qos(self.qos, (0, 1, 2))
        _check_topic_ref(self.topic, self.topic_id_type)


@dataclass(frozen=True, slots=True)
class Suback(Packet):
    msg_type: ClassVar[MsgType] = MsgType.SUBACK
    topic_id: int
    msg_id: int
    qos: int = 0
    return_code: int = ReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        _u16("topic_id", self.topic_id)
        _msg_id(self.msg_id)
        _qos(self.qos, (0, 1, 2))
        _rc(self.return_code)


@dataclass(frozen=True, slots=True)
class Unsubscribe(Packet):
    msg_type: ClassVar[MsgType] = MsgType.UNSUBSCRIBE
    msg_id: int
    topic: str | int
    topic_id_type: TopicIdType = TopicIdType.NORMAL

    def __post_init__(self) -> None:
        _msg_id(self.msg_id)
        _check_topic_ref(self.topic, self.topic_id_type)


@dataclass(frozen=True, slots=True)
class Unsuback(Packet):
    msg_type: ClassVar[MsgType] = MsgType.UNSUBACK
    msg_id: int

    def __post_init__(self) -> None:
        _msg_id(self.msg_id)


@dataclass(frozen=True, slots=True)
class Pingreq(Packet):
    """With a client id, a sleeping client asks for its buffered messages."""

    msg_type: ClassVar[MsgType] = MsgType.PINGREQ
    client_id: str | None = None

    def __post_init__(self) -> None:
        if self.client_id is not None:
            _text("client_id", self.client_id)
            if not self.client_id:
                raise LocalProtocolError("client_id must be None or non-empty")


@dataclass(frozen=True, slots=True)
class Pingresp(Packet):
    msg_type: ClassVar[MsgType] = MsgType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect(Packet):
    """With a duration, the client goes to sleep for that many seconds."""

    msg_type: ClassVar[MsgType] = MsgType.DISCONNECT
    duration: int | None = None

    def __post_init__(self) -> None:
        if self.duration is not None:
            _u16("duration", self.duration)


@dataclass(frozen=True, slots=True)
class WillTopicUpd(Packet):
    """An empty topic deletes the will (and its message)."""

    msg_type: ClassVar[MsgType] = MsgType.WILLTOPICUPD
    topic: str = ""
    qos: int = 0
    retain: bool = False

    def __post_init__(self) -> None:
        _text("topic", self.topic)
        _qos(self.qos, (0, 1, 2))
        _empty_will_has_no_flags(self.topic, self.qos, self.retain)


@dataclass(frozen=True, slots=True)
class WillTopicResp(Packet):
    msg_type: ClassVar[MsgType] = MsgType.WILLTOPICRESP
    return_code: int = ReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        _rc(self.return_code)


@dataclass(frozen=True, slots=True)
class WillMsgUpd(Packet):
    msg_type: ClassVar[MsgType] = MsgType.WILLMSGUPD
    message: bytes = b""

    def __post_init__(self) -> None:
        _bytes("message", self.message)


@dataclass(frozen=True, slots=True)
class WillMsgResp(Packet):
    msg_type: ClassVar[MsgType] = MsgType.WILLMSGRESP
    return_code: int = ReturnCode.ACCEPTED

    def __post_init__(self) -> None:
        _rc(self.return_code)


@dataclass(frozen=True, slots=True)
class Encapsulated(Packet):
    """Forwarder encapsulation (v1.2 §5.5).

    ``inner`` is kept as raw bytes: it is a complete MQTT-SN packet in plain v1.2, and a DTLS
    record when a blind relay forwards an end-to-end encrypted session.
    """

    msg_type: ClassVar[MsgType] = MsgType.ENCAPSULATED
    node_id: bytes
    inner: bytes
    radius: int = 0

    def __post_init__(self) -> None:
        _bytes("node_id", self.node_id)
        _bytes("inner", self.inner)
        if not self.inner:
            raise LocalProtocolError("an encapsulation carries a non-empty inner packet")
        if not isinstance(self.radius, int) or not 0 <= self.radius <= 3:
            raise LocalProtocolError(f"radius must be 0..3, got {self.radius!r}")
        if len(self.node_id) > 252:
            raise LocalProtocolError("node_id longer than 252 bytes does not fit the length octet")
