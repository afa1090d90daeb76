"""The MQTT 5 client, sans-I/O half: :class:`Mqtt5Session`.

Why not paho/aiomqtt: the bridge is one long-lived connection carrying a request PUBLISH in and a
reply PUBLISH out per device request, and the gateway forwards every node's message. paho reads a
packet with three or four ``recv`` calls, builds a Properties object per PUBLISH and per PUBACK and
writes each packet on its own; aiomqtt adds a task per message. Measured on benchmarks/api_mqtt.py
and benchmarks/gateway_throughput.py that was most of each path's own cost. The asyncio driver
(:mod:`bridge.mqtt5._client`) parses every packet one read brought in one ``data_received``, and
everything the session wants to send during one event-loop turn leaves in one ``write``.

:class:`Mqtt5Session` is the protocol (MQTT 5.0, OASIS standard), no I/O: feed it bytes with
:meth:`~Mqtt5Session.receive`, it returns events and keeps the bytes to send in ``outgoing``.
Scope: what a server-side client needs — CONNECT (clean start, session expiry, credentials, a will,
our Receive Maximum), SUBSCRIBE/UNSUBSCRIBE, PUBLISH at QoS 0/1/2 both ways, the server's Receive
Maximum and Maximum Packet Size, keep-alive.

Incoming QoS 1/2 are acknowledged at once (``auto_ack``, the bridge) or when the caller says so
(:meth:`~Mqtt5Session.ack`, the gateway: after the MQTT-SN node acknowledged). Until then the
server keeps the message in flight, and after a reconnect of a persistent session (clean start
off, session expiry > 0) sends it again with DUP set; a PUBREL for a QoS 2 message the session
does not know (PUBREC sent on an earlier connection) is answered PUBCOMP. Packet ids of our own
PUBLISHes start again at 1 on a new connection: a QoS 1 id may repeat freely, and mosquitto tells a
reused QoS 2 id from a duplicate by the message's content. Anything malformed from the server
raises :class:`Mqtt5ProtocolError`; the driver then sends DISCONNECT 0x81 and closes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._codec import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    MAX_PACKET_SIZE,
    MAX_REMAINING,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    SUBACK,
    SUBSCRIBE,
    TOPIC_ALIAS,
    UNSUBACK,
    UNSUBSCRIBE,
    ConnAck,
    Event,
    Mqtt5Error,
    Mqtt5ProtocolError,
    PingResp,
    PubAck,
    PublishIn,
    ServerDisconnect,
    SubAck,
    UnsubAck,
    packet,
    read_properties,
    read_utf8,
    utf8,
    varint,
)

__all__ = ["ConnectOptions", "Mqtt5Session", "Will"]

_PACKET_ID_NOT_FOUND = 0x92


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(slots=True)
class ConnectOptions:
    client_id: str
    keepalive: int = 60
    clean_start: bool = True
    session_expiry: int = 0
    username: str | None = None
    password: str | None = None
    will: Will | None = None
    receive_maximum: int = 65535  # QoS 1/2 PUBLISHes the server may have unacknowledged with us


@dataclass(slots=True)
class Mqtt5Session:
    """One MQTT 5 connection's protocol state. Bytes to send accumulate in :attr:`outgoing`."""

    options: ConnectOptions
    auto_ack: bool = True  # False: incoming QoS 1/2 wait for :meth:`ack`
    outgoing: bytearray = field(default_factory=bytearray)
    connected: bool = False
    session_present: bool = False
    server_receive_maximum: int = 65535
    server_max_packet: int = MAX_REMAINING + 5
    keepalive: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _ids: Iterable[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    _inflight: dict[int, int] = field(default_factory=dict)  # our QoS 1/2 PUBLISH id -> its QoS
    _released: set[int] = field(default_factory=set)  # our QoS 2 ids past PUBREC (PUBREL sent)
    _waiting: deque[tuple[int, int, bytes]] = field(default_factory=deque)  # beyond Receive Maximum
    _pending_subacks: set[int] = field(default_factory=set)
    _pending_unsubacks: set[int] = field(default_factory=set)
    _used: set[int] = field(default_factory=set)  # every packet id of ours in use
    _unacked_in: dict[int, int] = field(default_factory=dict)  # server's id -> QoS, caller not acked
    _qos2_in: set[int] = field(default_factory=set)  # server's QoS 2 ids we sent PUBREC for

    def __post_init__(self) -> None:
        self.keepalive = self.options.keepalive
        o = self.options
        if not 0 < o.receive_maximum <= 65535:
            raise ValueError("receive_maximum is 1..65535")
        flags = 0x02 if o.clean_start else 0
        payload = utf8(o.client_id)
        if o.will is not None:
            if o.will.qos not in (0, 1, 2):
                raise ValueError("a will's QoS is 0, 1 or 2")
            flags |= 0x04 | (o.will.qos << 3) | (0x20 if o.will.retain else 0)
            raw = o.will.payload
            payload += b"\x00" + utf8(o.will.topic) + len(raw).to_bytes(2, "big") + raw
        if o.username is not None:
            flags |= 0x80
            payload += utf8(o.username)
        if o.password is not None:
            flags |= 0x40
            payload += utf8(o.password)
        props = b"\x11" + o.session_expiry.to_bytes(4, "big") if o.session_expiry else b""
        if o.receive_maximum != 65535:
            props += b"\x21" + o.receive_maximum.to_bytes(2, "big")
        header = utf8("MQTT") + bytes([5, flags]) + o.keepalive.to_bytes(2, "big")
        self.outgoing += packet(CONNECT << 4, header + varint(len(props)) + props + payload)

    # -- sending --

    def _next_mid(self) -> int:
        """A packet id not in use by any unacknowledged PUBLISH or (UN)SUBSCRIBE of ours."""
        if len(self._used) >= 65535:
            raise Mqtt5Error("every packet id is in use: the server acknowledges nothing")
        for mid in self._ids:  # pragma: no branch - a free one is found within 65,535 steps
            if mid not in self._used:
                self._used.add(mid)
                return mid
        raise AssertionError("unreachable")

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, properties: bytes = b"\x00", retain: bool = False
    ) -> int:
        """Queue a PUBLISH; returns its packet id (0 for QoS 0). ``properties`` from
        :func:`~bridge.mqtt5.encode_user_properties` (or ``b"\\x00"`` for none)."""
        if qos not in (0, 1, 2):
            raise ValueError("QoS is 0, 1 or 2")
        if not topic or any(c in topic for c in "+#\x00"):
            raise ValueError(f"bad topic name {topic!r}")
        mid = 0
        head = utf8(topic)
        if qos:
            mid = self._next_mid()
            head += mid.to_bytes(2, "big")
        data = packet((PUBLISH << 4) | (qos << 1) | retain, head + properties + payload)
        if len(data) > self.server_max_packet:
            self._used.discard(mid)
            raise Mqtt5Error(f"PUBLISH of {len(data)} bytes exceeds the server's maximum packet size")
        if qos and len(self._inflight) >= self.server_receive_maximum:
            self._waiting.append((mid, qos, data))  # the server's Receive Maximum: wait for a slot
            return mid
        if qos:
            self._inflight[mid] = qos
        self.outgoing += data
        return mid

    def subscribe(self, filters: list[tuple[str, int]]) -> int:
        body = b"\x00"
        for topic_filter, qos in filters:
            if qos not in (0, 1, 2):
                raise ValueError("subscriptions are at QoS 0, 1 or 2")
            body += utf8(topic_filter) + bytes([qos])
        mid = self._next_mid()
        self._pending_subacks.add(mid)
        self.outgoing += packet((SUBSCRIBE << 4) | 0x02, mid.to_bytes(2, "big") + body)
        return mid

    def unsubscribe(self, filters: list[str]) -> int:
        body = b"\x00" + b"".join(utf8(f) for f in filters)
        mid = self._next_mid()
        self._pending_unsubacks.add(mid)
        self.outgoing += packet((UNSUBSCRIBE << 4) | 0x02, mid.to_bytes(2, "big") + body)
        return mid

    def ack(self, mid: int) -> bool:
        """Acknowledge the server's QoS 1/2 PUBLISH ``mid`` (PUBACK, or PUBREC at QoS 2), when
        not ``auto_ack``. False if this session holds no such message (acked already, or it came
        on an earlier connection)."""
        qos = self._unacked_in.pop(mid, 0)
        if qos == 1:
            self.outgoing += b"\x40\x02" + mid.to_bytes(2, "big")
        elif qos == 2:
            self._qos2_in.add(mid)
            self.outgoing += b"\x50\x02" + mid.to_bytes(2, "big")
        return qos != 0

    def ping(self) -> None:
        self.outgoing += b"\xc0\x00"

    def disconnect(self, reason: int = 0) -> None:
        self.outgoing += b"\xe0\x00" if reason == 0 else bytes([0xE0, 2, reason, 0])

    @property
    def inflight(self) -> int:
        """Our QoS 1/2 PUBLISHes not yet acknowledged (sent or waiting for a Receive Maximum slot)."""
        return len(self._inflight) + len(self._waiting)

    @property
    def unacked_in(self) -> int:
        """The server's QoS 1/2 PUBLISHes the caller has not acknowledged yet."""
        return len(self._unacked_in)

    # -- receiving --

    def receive(self, data: bytes) -> list[Event]:
        """Parse every whole packet in ``data`` (plus what earlier calls left); with ``auto_ack``
        the PUBACK/PUBREC for an incoming QoS 1/2 PUBLISH is queued in :attr:`outgoing` as it is
        parsed."""
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
                event = self._packet_in(buf[pos], bytes(buf[i : i + length]))
                if event is not None:
                    events.append(event)
                pos = i + length
        finally:
            del buf[:pos]
        return events

    def _packet_in(self, first: int, body: bytes) -> Event | None:
        kind = first >> 4
        end = len(body)
        if kind == PUBLISH:
            return self._publish_in(first, body)
        if not self.connected and kind != CONNACK:
            raise Mqtt5ProtocolError(f"packet type {kind} before CONNACK")
        if kind in (PUBACK, PUBREC, PUBCOMP, PUBREL):
            if end < 2 or (first & 0x0F) != (2 if kind == PUBREL else 0):
                raise Mqtt5ProtocolError(f"malformed acknowledgement (type {kind})")
            mid = int.from_bytes(body[:2], "big")
            reason = body[2] if end > 2 else 0
            if end > 3:
                read_properties(body, 3, end)
            if kind == PUBREL:
                if mid in self._qos2_in:
                    self._qos2_in.discard(mid)
                    self.outgoing += b"\x70\x02" + mid.to_bytes(2, "big")
                else:  # its PUBREC went out on an earlier connection
                    self.outgoing += b"\x70\x03" + mid.to_bytes(2, "big") + bytes([_PACKET_ID_NOT_FOUND])
                return None
            return self._ack_in(kind, mid, reason)
        if kind in (SUBACK, UNSUBACK):
            if end < 3:
                raise Mqtt5ProtocolError("SUBACK/UNSUBACK too short")
            mid = int.from_bytes(body[:2], "big")
            _, pos = read_properties(body, 2, end)
            pending = self._pending_subacks if kind == SUBACK else self._pending_unsubacks
            if mid not in pending:
                raise Mqtt5ProtocolError(f"SUBACK/UNSUBACK for unknown packet id {mid}")
            pending.discard(mid)
            self._used.discard(mid)
            return SubAck(mid, tuple(body[pos:])) if kind == SUBACK else UnsubAck(mid, tuple(body[pos:]))
        if kind == CONNACK:
            if self.connected or end < 3 or first & 0x0F:
                raise Mqtt5ProtocolError("unexpected or malformed CONNACK")
            props, _ = read_properties(body, 2, end)
            ack = ConnAck(bool(body[0] & 1), body[1], props)
            if ack.reason < 0x80:
                self.connected = True
                self.session_present = ack.session_present
                self.server_receive_maximum = int(props.values.get(RECEIVE_MAXIMUM, 65535)) or 65535
                self.server_max_packet = int(props.values.get(MAX_PACKET_SIZE, self.server_max_packet))
                self.keepalive = int(props.values.get(SERVER_KEEP_ALIVE, self.keepalive))
            return ack
        if kind == PINGRESP:
            return PingResp()
        if kind == DISCONNECT:
            reason = body[0] if end else 0
            message = ""
            if end > 1:
                props, _ = read_properties(body, 1, end)
                message = str(props.values.get(REASON_STRING, ""))
            return ServerDisconnect(reason, message)
        raise Mqtt5ProtocolError(f"unexpected packet type {kind} from the server")

    def _ack_in(self, kind: int, mid: int, reason: int) -> PubAck | None:
        """PUBACK, PUBREC or PUBCOMP for one of our PUBLISHes."""
        qos = self._inflight.get(mid)
        expected = PUBACK if qos == 1 else PUBCOMP if mid in self._released else PUBREC
        if qos is None or kind != expected:
            if kind == PUBREC and mid in self._released:  # our PUBREL crossed a resent PUBREC
                self.outgoing += b"\x62\x02" + mid.to_bytes(2, "big")
                return None
            raise Mqtt5ProtocolError(f"acknowledgement (type {kind}) for unknown packet id {mid}")
        if kind == PUBREC and reason < 0x80:
            self._released.add(mid)
            self.outgoing += b"\x62\x02" + mid.to_bytes(2, "big")  # PUBREL
            return None
        del self._inflight[mid]
        self._released.discard(mid)
        self._used.discard(mid)
        while self._waiting and len(self._inflight) < self.server_receive_maximum:
            waiting_mid, waiting_qos, data = self._waiting.popleft()
            self._inflight[waiting_mid] = waiting_qos
            self.outgoing += data
        return PubAck(mid, reason)

    def _publish_in(self, first: int, body: bytes) -> PublishIn | None:
        if not self.connected:
            raise Mqtt5ProtocolError("PUBLISH before CONNACK")
        qos = (first >> 1) & 3
        if qos > 2:
            raise Mqtt5ProtocolError("PUBLISH with QoS 3")
        end = len(body)
        topic, pos = read_utf8(body, 0, end)
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
            props, pos = read_properties(body, pos, end)
            if TOPIC_ALIAS in props.values:
                raise Mqtt5ProtocolError("topic alias from the server: we allow none")
            user = props.user
        if not topic or any(c in topic for c in "+#\x00"):
            raise Mqtt5ProtocolError(f"bad topic name {topic!r} in PUBLISH")
        if qos:
            if mid in self._unacked_in:
                return None  # the caller holds it already (a resend with DUP)
            if qos == 2 and mid in self._qos2_in:
                self.outgoing += b"\x50\x02" + mid.to_bytes(2, "big")  # our PUBREC was lost
                return None
            if len(self._unacked_in) + len(self._qos2_in) >= self.options.receive_maximum:
                raise Mqtt5ProtocolError("the server exceeded our Receive Maximum")
            self._unacked_in[mid] = qos
            if self.auto_ack:
                self.ack(mid)
        return PublishIn(topic, body[pos:], qos, bool(first & 1), bool(first & 8), mid, user)

    def take_outgoing(self) -> bytes:
        data = bytes(self.outgoing)
        self.outgoing.clear()
        return data
