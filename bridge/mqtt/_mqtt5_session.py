"""The bridge's MQTT 5 client, sans-I/O half: codec, events and :class:`Mqtt5Session`.

Why not paho/aiomqtt here: the bridge is one long-lived connection carrying a request PUBLISH in
and a reply PUBLISH out per device request. paho reads a packet with three or four ``recv`` calls,
builds a Properties object per PUBLISH and per PUBACK and writes each packet on its own; aiomqtt adds
a task per message. Measured on benchmarks/api_mqtt.py that was most of the MQTT path's own cost.
The asyncio driver (:mod:`bridge.mqtt._mqtt5_client`) parses every packet one read brought in one
``data_received``, and everything the session wants to send during one event-loop turn leaves in
one ``write``.

:class:`Mqtt5Session` is the protocol (MQTT 5.0, OASIS standard), no I/O: feed it bytes with
:meth:`~Mqtt5Session.receive`, it returns events and keeps the bytes to send in ``outgoing``.
Scope: what a server-side client needs — CONNECT (clean start / session expiry / credentials),
SUBSCRIBE (shared subscriptions are plain topic filters), PUBLISH QoS 0/1 both ways (QoS 2 is
never granted because we never subscribe above QoS 1; a QoS 2 PUBLISH from the server is a protocol
error), the server's Receive Maximum and Maximum Packet Size, keep-alive. Anything malformed from the
server raises :class:`Mqtt5ProtocolError`; the driver then sends DISCONNECT 0x81 and closes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "ConnAck",
    "ConnectOptions",
    "Event",
    "Mqtt5ConnectError",
    "Mqtt5Error",
    "Mqtt5ProtocolError",
    "Mqtt5Session",
    "PingResp",
    "PubAck",
    "PublishIn",
    "ServerDisconnect",
    "SubAck",
    "encode_user_properties",
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
_RECEIVE_MAXIMUM, _MAX_PACKET_SIZE, _SERVER_KEEP_ALIVE, _TOPIC_ALIAS = 0x21, 0x27, 0x13, 0x23
_REASON_STRING = 0x1F
_MAX_REMAINING = 268_435_455


class Mqtt5Error(Exception):
    """The MQTT connection cannot be used (lost, refused, or the server broke the protocol)."""


class Mqtt5ProtocolError(Mqtt5Error):
    """The server sent something MQTT 5 does not allow (malformed or out of place)."""


class Mqtt5ConnectError(Mqtt5Error):
    """CONNACK (or SUBACK) carried a failure reason code."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    if len(body) > _MAX_REMAINING:
        raise ValueError("MQTT packets are at most 256 MiB")
    return bytes([first]) + _varint(len(body)) + body


def encode_user_properties(pairs: Iterable[tuple[str, str]]) -> bytes:
    """A PUBLISH's property block (length + properties) holding these user properties; encode once."""
    props = b"".join(b"\x26" + _utf8(k) + _utf8(v) for k, v in pairs)
    return _varint(len(props)) + props


@dataclass(frozen=True, slots=True)
class Properties:
    values: dict[int, int | str | bytes]
    user: list[tuple[str, str]]


def _read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
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


def _read_bytes(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise Mqtt5ProtocolError("truncated length-prefixed field")
    size = int.from_bytes(buf[pos : pos + 2], "big")
    if pos + 2 + size > end:
        raise Mqtt5ProtocolError("length-prefixed field overruns its packet")
    return buf[pos + 2 : pos + 2 + size], pos + 2 + size


def _read_utf8(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    raw, pos = _read_bytes(buf, pos, end)
    try:
        return raw.decode(), pos
    except UnicodeDecodeError:
        raise Mqtt5ProtocolError("invalid UTF-8 string") from None


def _read_properties(buf: bytes, pos: int, end: int) -> tuple[Properties, int]:
    length, pos = _read_varint(buf, pos, end)
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
            value, pos = _read_varint(buf, pos, stop)
        elif kind == _UTF8:
            value, pos = _read_utf8(buf, pos, stop)
        elif kind == _BINARY:
            value, pos = _read_bytes(buf, pos, stop)
        else:
            name, pos = _read_utf8(buf, pos, stop)
            text, pos = _read_utf8(buf, pos, stop)
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
    mid: int
    reason: int


@dataclass(frozen=True, slots=True)
class SubAck:
    mid: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class ServerDisconnect:
    reason: int
    message: str


Event = ConnAck | PublishIn | PubAck | SubAck | PingResp | ServerDisconnect


# --- the session (sans-I/O) ------------------------------------------------------------------------


@dataclass(slots=True)
class ConnectOptions:
    client_id: str
    keepalive: int = 60
    clean_start: bool = True
    session_expiry: int = 0
    username: str | None = None
    password: str | None = None


@dataclass(slots=True)
class Mqtt5Session:
    """One MQTT 5 connection's protocol state. Bytes to send accumulate in :attr:`outgoing`."""

    options: ConnectOptions
    outgoing: bytearray = field(default_factory=bytearray)
    connected: bool = False
    server_receive_maximum: int = 65535
    server_max_packet: int = _MAX_REMAINING + 5
    keepalive: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _ids: Iterable[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    _inflight: set[int] = field(default_factory=set)  # our QoS 1 PUBLISHes awaiting PUBACK
    _waiting: deque[tuple[int, bytes]] = field(default_factory=deque)  # beyond Receive Maximum
    _pending_subacks: set[int] = field(default_factory=set)
    _used: set[int] = field(default_factory=set)  # every packet id in use (PUBLISH and SUBSCRIBE share them)

    def __post_init__(self) -> None:
        self.keepalive = self.options.keepalive
        o = self.options
        flags = 0x02 if o.clean_start else 0
        payload = _utf8(o.client_id)
        if o.username is not None:
            flags |= 0x80
            payload += _utf8(o.username)
        if o.password is not None:
            flags |= 0x40
            payload += _utf8(o.password)
        props = b"\x11" + o.session_expiry.to_bytes(4, "big") if o.session_expiry else b""
        header = _utf8("MQTT") + bytes([5, flags]) + o.keepalive.to_bytes(2, "big")
        self.outgoing += _packet(CONNECT << 4, header + _varint(len(props)) + props + payload)

    # -- sending --

    def _next_mid(self) -> int:
        """A packet id not in use by any unacknowledged PUBLISH or SUBSCRIBE of ours."""
        if len(self._used) >= 65535:
            raise Mqtt5Error("every packet id is in use: the server acknowledges nothing")
        for mid in self._ids:  # pragma: no branch - a free one is found within 65,535 steps
            if mid not in self._used:
                self._used.add(mid)
                return mid
        raise AssertionError("unreachable")

    def publish(self, topic: str, payload: bytes, qos: int = 0, properties: bytes = b"\x00") -> int:
        """Queue a PUBLISH; returns its packet id (0 for QoS 0). ``properties`` from
        :func:`encode_user_properties` (or ``b"\\x00"`` for none)."""
        if qos not in (0, 1):
            raise ValueError("this client publishes at QoS 0 or 1")
        if not topic or any(c in topic for c in "+#\x00"):
            raise ValueError(f"bad topic name {topic!r}")
        mid = 0
        head = _utf8(topic)
        if qos:
            mid = self._next_mid()
            head += mid.to_bytes(2, "big")
        packet = _packet((PUBLISH << 4) | (qos << 1), head + properties + payload)
        if len(packet) > self.server_max_packet:
            self._used.discard(mid)
            raise Mqtt5Error(f"PUBLISH of {len(packet)} bytes exceeds the server's maximum packet size")
        if qos and len(self._inflight) >= self.server_receive_maximum:
            self._waiting.append((mid, packet))  # the server's Receive Maximum: wait for a PUBACK
            return mid
        if qos:
            self._inflight.add(mid)
        self.outgoing += packet
        return mid

    def subscribe(self, filters: list[tuple[str, int]]) -> int:
        body = b"\x00"
        for topic_filter, qos in filters:
            if qos not in (0, 1):
                raise ValueError("subscriptions are at QoS 0 or 1")
            body += _utf8(topic_filter) + bytes([qos])
        mid = self._next_mid()
        self._pending_subacks.add(mid)
        self.outgoing += _packet((SUBSCRIBE << 4) | 0x02, mid.to_bytes(2, "big") + body)
        return mid

    def ping(self) -> None:
        self.outgoing += b"\xc0\x00"

    def disconnect(self, reason: int = 0) -> None:
        self.outgoing += b"\xe0\x00" if reason == 0 else bytes([0xE0, 2, reason, 0])

    @property
    def inflight(self) -> int:
        return len(self._inflight) + len(self._waiting)

    # -- receiving --

    def receive(self, data: bytes) -> list[Event]:
        """Parse every whole packet in ``data`` (plus what earlier calls left); PUBACKs for
        incoming QoS 1 PUBLISHes are queued in :attr:`outgoing` as they are parsed."""
        buf = self._buffer
        buf += data
        events: list[Event] = []
        pos, size = 0, len(buf)
        try:
            while size - pos >= 2:
                length = shift = 0
                i = pos + 1
                while True:
                    if i >= size:
                        return events
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise Mqtt5ProtocolError("remaining length longer than 4 bytes")
                if size - i < length:
                    break
                events.append(self._packet_in(buf[pos], bytes(buf[i : i + length])))
                pos = i + length
        finally:
            del buf[:pos]
        return events

    def _packet_in(self, first: int, body: bytes) -> Event:
        kind = first >> 4
        end = len(body)
        if kind == PUBLISH:
            return self._publish_in(first, body)
        if not self.connected and kind != CONNACK:
            raise Mqtt5ProtocolError(f"packet type {kind} before CONNACK")
        if kind == PUBACK:
            if end < 2:
                raise Mqtt5ProtocolError("PUBACK too short")
            mid = int.from_bytes(body[:2], "big")
            reason = body[2] if end > 2 else 0
            if end > 3:
                _read_properties(body, 3, end)
            if mid not in self._inflight:
                raise Mqtt5ProtocolError(f"PUBACK for unknown packet id {mid}")
            self._inflight.discard(mid)
            self._used.discard(mid)
            while self._waiting and len(self._inflight) < self.server_receive_maximum:
                waiting_mid, packet = self._waiting.popleft()
                self._inflight.add(waiting_mid)
                self.outgoing += packet
            return PubAck(mid, reason)
        if kind == SUBACK:
            if end < 3:
                raise Mqtt5ProtocolError("SUBACK too short")
            mid = int.from_bytes(body[:2], "big")
            _, pos = _read_properties(body, 2, end)
            if mid not in self._pending_subacks:
                raise Mqtt5ProtocolError(f"SUBACK for unknown packet id {mid}")
            self._pending_subacks.discard(mid)
            self._used.discard(mid)
            return SubAck(mid, tuple(body[pos:]))
        if kind == CONNACK:
            if self.connected or end < 3 or first & 0x0F:
                raise Mqtt5ProtocolError("unexpected or malformed CONNACK")
            props, _ = _read_properties(body, 2, end)
            ack = ConnAck(bool(body[0] & 1), body[1], props)
            if ack.reason < 0x80:
                self.connected = True
                self.server_receive_maximum = int(props.values.get(_RECEIVE_MAXIMUM, 65535)) or 65535
                self.server_max_packet = int(props.values.get(_MAX_PACKET_SIZE, self.server_max_packet))
                self.keepalive = int(props.values.get(_SERVER_KEEP_ALIVE, self.keepalive))
            return ack
        if kind == PINGRESP:
            return PingResp()
        if kind == DISCONNECT:
            reason = body[0] if end else 0
            message = ""
            if end > 1:
                props, _ = _read_properties(body, 1, end)
                message = str(props.values.get(_REASON_STRING, ""))
            return ServerDisconnect(reason, message)
        raise Mqtt5ProtocolError(f"unexpected packet type {kind} from the server")

    def _publish_in(self, first: int, body: bytes) -> PublishIn:
        if not self.connected:
            raise Mqtt5ProtocolError("PUBLISH before CONNACK")
        qos = (first >> 1) & 3
        if qos > 1:
            raise Mqtt5ProtocolError(f"PUBLISH at QoS {qos}: never granted")
        end = len(body)
        topic, pos = _read_utf8(body, 0, end)
        mid = 0
        if qos:
            if pos + 2 > end:
                raise Mqtt5ProtocolError("PUBLISH without packet id")
            mid = int.from_bytes(body[pos : pos + 2], "big")
            if mid == 0:
                raise Mqtt5ProtocolError("PUBLISH with packet id 0")
            pos += 2
        if pos < end and body[pos] == 0:  # the common case: no properties
            user: list[tuple[str, str]] = []
            pos += 1
        else:
            props, pos = _read_properties(body, pos, end)
            if _TOPIC_ALIAS in props.values:
                raise Mqtt5ProtocolError("topic alias from the server: we allow none")
            user = props.user
        if not topic or any(c in topic for c in "+#\x00"):
            raise Mqtt5ProtocolError(f"bad topic name {topic!r} in PUBLISH")
        if qos:
            self.outgoing += b"\x40\x02" + mid.to_bytes(2, "big")
        return PublishIn(topic, body[pos:], qos, bool(first & 1), bool(first & 8), mid, user)

    def take_outgoing(self) -> bytes:
        data = bytes(self.outgoing)
        self.outgoing.clear()
        return data
