"""MQTT 5.0 codec shared by the session (:mod:`bridge.mqtt5._session`): errors, field encoders
and decoders, properties, and the events a session reports. No I/O, no state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ConnAck",
    "Event",
    "Mqtt5ConnectError",
    "Mqtt5Error",
    "Mqtt5ProtocolError",
    "PingResp",
    "Properties",
    "PubAck",
    "PublishIn",
    "ServerDisconnect",
    "SubAck",
    "UnsubAck",
    "encode_user_properties",
    "packet",
    "read_bytes",
    "read_properties",
    "read_utf8",
    "read_varint",
    "utf8",
    "varint",
]

# packet types (high nibble of the first byte)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

# property identifier -> wire type (MQTT 5.0 section 2.2.2.2)
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _UTF8, 0x08: _UTF8, 0x09: _BINARY, 0x0B: _VARINT, 0x11: _U32,
    0x12: _UTF8, 0x13: _U16, 0x15: _UTF8, 0x16: _BINARY, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE,
    0x1A: _UTF8, 0x1C: _UTF8, 0x1F: _UTF8, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _U32, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
USER_PROPERTY = 0x26
RECEIVE_MAXIMUM, MAX_PACKET_SIZE, SERVER_KEEP_ALIVE, TOPIC_ALIAS = 0x21, 0x27, 0x13, 0x23
REASON_STRING = 0x1F
MAX_REMAINING = 268_435_455


class Mqtt5Error(Exception):
    """The MQTT connection cannot be used (lost, refused, or the server broke the protocol)."""


class Mqtt5ProtocolError(Mqtt5Error):
    """The server sent something MQTT 5 does not allow (malformed or out of place)."""


class Mqtt5ConnectError(Mqtt5Error):
    """CONNACK (or SUBACK) carried a failure reason code."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def packet(first: int, body: bytes) -> bytes:
    if len(body) > MAX_REMAINING:
        raise ValueError("MQTT packets are at most 256 MiB")
    return bytes([first]) + varint(len(body)) + body


def encode_user_properties(pairs: Iterable[tuple[str, str]]) -> bytes:
    """A PUBLISH's property block (length + properties) holding these user properties; encode once."""
    props = b"".join(b"\x26" + utf8(k) + utf8(v) for k, v in pairs)
    return varint(len(props)) + props


@dataclass(frozen=True, slots=True)
class Properties:
    values: dict[int, int | str | bytes]
    user: list[tuple[str, str]]


def read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(4):
        if pos >= end:
            raise Mqtt5ProtocolError("truncated variable byte integer")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise Mqtt5ProtocolError("variable byte integer longer than 4 bytes")


def read_bytes(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise Mqtt5ProtocolError("truncated length-prefixed field")
    size = int.from_bytes(buf[pos : pos + 2], "big")
    if pos + 2 + size > end:
        raise Mqtt5ProtocolError("length-prefixed field overruns its packet")
    return buf[pos + 2 : pos + 2 + size], pos + 2 + size


def read_utf8(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    raw, pos = read_bytes(buf, pos, end)
    try:
        return raw.decode(), pos
    except UnicodeDecodeError:
        raise Mqtt5ProtocolError("invalid UTF-8 string") from None


def read_properties(buf: bytes, pos: int, end: int) -> tuple[Properties, int]:
    length, pos = read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise Mqtt5ProtocolError("properties overrun their packet")
    values: dict[int, int | str | bytes] = {}
    user: list[tuple[str, str]] = []
    while pos < stop:
        ident = buf[pos]
        pos += 1
        kind = _PROPERTY_TYPES.get(ident)
        if kind is None:
            raise Mqtt5ProtocolError(f"unknown property {ident:#04x}")
        value: int | str | bytes
        if kind == _BYTE:
            if pos >= stop:
                raise Mqtt5ProtocolError("truncated property")
            value, pos = buf[pos], pos + 1
        elif kind in (_U16, _U32):
            size = 2 if kind == _U16 else 4
            if pos + size > stop:
                raise Mqtt5ProtocolError("truncated property")
            value, pos = int.from_bytes(buf[pos : pos + size], "big"), pos + size
        elif kind == _VARINT:
            value, pos = read_varint(buf, pos, stop)
        elif kind == _UTF8:
            value, pos = read_utf8(buf, pos, stop)
        elif kind == _BINARY:
            value, pos = read_bytes(buf, pos, stop)
        else:
            name, pos = read_utf8(buf, pos, stop)
            text, pos = read_utf8(buf, pos, stop)
            user.append((name, text))
            continue
        values[ident] = value
    if pos != stop:
        raise Mqtt5ProtocolError("properties overrun their length")
    return Properties(values, user), stop


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason: int
    properties: Properties


@dataclass(frozen=True, slots=True)
class PublishIn:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    user_properties: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class PubAck:
    """Our QoS 1 PUBLISH was acknowledged (PUBACK), or our QoS 2 one completed (PUBCOMP, or a
    PUBREC with a failure reason); ``reason`` >= 0x80 means the server refused it."""

    mid: int
    reason: int


@dataclass(frozen=True, slots=True)
class SubAck:
    mid: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    mid: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class ServerDisconnect:
    reason: int
    message: str


Event = ConnAck | PublishIn | PubAck | SubAck | UnsubAck | PingResp | ServerDisconnect
