"""A small MQTT 5 client for the bridge: a sans-I/O session plus an asyncio driver.

Why not paho/aiomqtt here: the bridge is one long-lived connection carrying a request PUBLISH in
and a reply PUBLISH out per device request. paho reads a packet with three or four ``recv`` calls,
builds a Properties object per PUBLISH and per PUBACK and writes each packet on its own; aiomqtt adds
a task per message. Measured on benchmarks/api_mqtt.py that was most of the MQTT path's own cost.
Here one ``data_received`` parses every packet the read brought, and everything the session wants
to send during one event-loop turn leaves in one ``write``.

:class:`Mqtt5Session` is the protocol (MQTT 5.0, OASIS standard), no I/O: feed it bytes with
:meth:`~Mqtt5Session.receive`, it returns events and keeps the bytes to send in ``outgoing``.
Scope: what a server-side client needs — CONNECT (clean start / session expiry / credentials),
SUBSCRIBE (shared subscriptions are plain topic filters), PUBLISH QoS 0/1 both ways (QoS 2 is
never granted because we never subscribe above QoS 1; a QoS 2 PUBLISH from the server is a protocol
error), the server's Receive Maximum and Maximum Packet Size, keep-alive. Anything malformed from the
server raises :class:`Mqtt5ProtocolError`; the driver then sends DISCONNECT 0x81 and closes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = [
    "ConnAck",
    "Mqtt5Client",
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


# --- asyncio driver ------------------------------------------------------------------------------


class Mqtt5Client(asyncio.Protocol):
    """Runs a :class:`Mqtt5Session` on a TCP connection.

    ``on_message(PublishIn)`` and ``on_published(mid)`` (a QoS 1 PUBLISH of ours was acknowledged)
    run synchronously in ``data_received``; a PUBACK for an incoming QoS 1 PUBLISH is sent after
    ``on_message`` returns. :attr:`closed` completes (with the reason as exception) when the
    connection ends for any reason other than :meth:`close`.
    """

    def __init__(
        self,
        session: Mqtt5Session,
        on_message: Callable[[PublishIn], None],
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        self.session = session
        self.on_message = on_message
        self.on_published = on_published
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.closed: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[ConnAck] = loop.create_future()
        self._subacks: dict[int, asyncio.Future[SubAck]] = {}
        self._flush_scheduled = False
        self._last_in = self._last_out = loop.time()
        self._keepalive_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        options: ConnectOptions,
        on_message: Callable[[PublishIn], None],
        on_published: Callable[[int], None] | None = None,
        *,
        timeout: float = 10.0,
    ) -> tuple[Mqtt5Client, ConnAck]:
        """Open the connection and wait for a successful CONNACK (else :class:`Mqtt5Error`)."""
        loop = asyncio.get_running_loop()
        client = cls(Mqtt5Session(options), on_message, on_published)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: client, host, port), timeout)
            ack = await asyncio.wait_for(asyncio.shield(client._connack), timeout)
        except (OSError, TimeoutError) as exc:
            client.close()
            why = str(exc) or type(exc).__name__
            raise Mqtt5Error(f"cannot connect to {host}:{port}: {why}") from None
        except Mqtt5Error:
            client.close()
            raise
        if ack.reason >= 0x80:
            client.close()
            raise Mqtt5ConnectError(f"CONNACK refused with reason {ack.reason:#04x}", ack.reason)
        client._arm_keepalive()
        return client, ack

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> tuple[int, ...]:
        """Subscribe and wait for the SUBACK; :class:`Mqtt5ConnectError` if a filter was refused."""
        self._check_open()
        mid = self.session.subscribe(filters)
        fut: asyncio.Future[SubAck] = self._loop.create_future()
        self._subacks[mid] = fut
        self._flush()
        try:
            ack = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise Mqtt5Error("no SUBACK") from None
        for (topic_filter, _), reason in zip(filters, ack.reasons, strict=False):
            if reason >= 0x80:
                raise Mqtt5ConnectError(f"subscription {topic_filter!r} refused ({reason:#04x})", reason)
        return ack.reasons

    def publish(self, topic: str, payload: bytes, qos: int = 0, properties: bytes = b"\x00") -> int:
        """Queue a PUBLISH; it leaves with everything else queued in this event-loop turn."""
        self._check_open()
        mid = self.session.publish(topic, payload, qos, properties)
        self._schedule_flush()
        return mid

    def close(self) -> None:
        """Send DISCONNECT (normal) and close; :attr:`closed` completes without an exception."""
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self.session.disconnect()
            self._flush()
            self._transport.close()
        if not self.closed.done():
            self.closed.set_result(None)
        self._fail_waiters(Mqtt5Error("connection closed"))

    # -- internals --

    def _check_open(self) -> None:
        if self.closed.done() or self._transport is None:
            raise Mqtt5Error("not connected")

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.session.outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(self.session.take_outgoing())
            self._last_out = self._loop.time()

    def _fail(self, exc: Mqtt5Error) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()  # retrieved: the owner may be gone already
        self._fail_waiters(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail_waiters(self, exc: Mqtt5Error) -> None:
        waiters: list[asyncio.Future[Any]] = [self._connack, *self._subacks.values()]
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: nobody may be waiting any more

    def _arm_keepalive(self) -> None:
        ka = self.session.keepalive
        if ka <= 0 or self.closed.done():
            return
        now = self._loop.time()
        if now - self._last_in > 1.5 * ka:
            self._fail(Mqtt5Error(f"no packet from the server for {1.5 * ka:.0f} s"))
            return
        if now - self._last_out >= ka * 0.9:
            self.session.ping()
            self._flush()
        self._keepalive_timer = self._loop.call_later(ka / 2, self._arm_keepalive)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._flush()  # CONNECT

    def data_received(self, data: bytes) -> None:
        self._last_in = self._loop.time()
        try:
            events = self.session.receive(data)
        except Mqtt5ProtocolError as exc:
            self.session.disconnect(0x81)  # malformed packet
            self._flush()
            self._fail(exc)
            return
        for event in events:
            if isinstance(event, PublishIn):
                self.on_message(event)
            elif isinstance(event, PubAck):
                if self.on_published is not None:
                    self.on_published(event.mid)
            elif isinstance(event, ConnAck):
                if not self._connack.done():
                    self._connack.set_result(event)
            elif isinstance(event, SubAck):
                fut = self._subacks.pop(event.mid, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
            elif isinstance(event, ServerDisconnect):
                detail = f": {event.message}" if event.message else ""
                self._fail(Mqtt5Error(f"server sent DISCONNECT {event.reason:#04x}{detail}"))
                return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(Mqtt5Error(f"connection lost: {exc}" if exc else "connection closed by the server"))
