"""MQTT connections of the gateway, on the MQTT 5 client of :mod:`bridge.mqtt5`.

One :class:`BrokerLink` owns every MQTT connection the sans-I/O gateway asks for: one per MQTT-SN
client in transparent mode, plus the gateway's own connection (``GATEWAY_CONN``). It runs the
gateway's :class:`~mqttsn.BrokerAction` s and reports answers through callbacks, which the UDP
driver turns into ``Gateway.broker_*`` calls.

Acknowledgement after the node's: every connection runs with ``auto_ack`` off, so a QoS 1/2
PUBLISH from the broker is handed to the gateway with an ack handle and acknowledged (PUBACK, or
PUBREC at QoS 2) only when the gateway's :class:`~mqttsn.BrokerAck` says its node(s) have it. A
gateway killed before that leaves the message in flight in the broker's session, which sends it
again when the same client id resumes the session (clean start off): per node in transparent
mode (a node connecting with CleanSession=0), the gateway's own id (``--client-id``) in
aggregating mode, whose session outlives the connection by ``session_expiry`` seconds.

Organisations (docs/topics.md, "Organisations"): ``tenant_of`` maps a verified transport
identity to its organisation id (the PSK file's third column). A node of an organisation other
than the default one keeps its node-visible topics; on the broker its device-API topics are the
organisation's (:mod:`wire.tenant_topics`): requests and batches are published, response filters
subscribed, under ``/mender/t/{organisation}/``, and what arrives there is handed to the gateway
under the node-visible name again. Its transparent connection logs in as the organisation's
broker user (``tenant_passwords``: user = organisation id), so the broker's ACL keeps it on its
organisation's topics and its own client id. No node may name ``/mender/t/...`` itself: such a
publish is dropped and such a subscribe refused, whatever its organisation.

No task per message: a publish is queued on the session and leaves with everything else queued
in that event-loop turn in one write; the broker's PUBACK answers the gateway from
``data_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.mqtt5 import ConnectOptions, Mqtt5Client, Mqtt5Error, PublishIn, Will, encode_user_properties
from mqttsn import (
    GATEWAY_CONN,
    BrokerAck,
    BrokerAction,
    BrokerConnect,
    BrokerDisconnect,
    BrokerPublish,
    BrokerSubscribe,
    BrokerUnsubscribe,
)
from wire.envelope import DEVICE_PROPERTY, VERIFIED_PROPERTY  # stamped on every forwarded PUBLISH
from wire.tenant_topics import DEFAULT_TENANT, is_tenant_topic, split_tenant_topic, tenant_topic

__all__ = ["BrokerAnswers", "BrokerLink", "stamp_properties"]

_SESSION_FOREVER = 0xFFFFFFFF  # MQTT 3.1.1 CleanSession=0 semantics: the session never expires
_BYTES_PER_PACKET = 64  # backlog in packets, estimated from the bytes waiting for the socket

log = logging.getLogger("meshota.gateway")


@functools.lru_cache(maxsize=16384)
def stamp_properties(device: str, verified: bool) -> bytes:
    """The PUBLISH property block carrying the identity the gateway vouches for (encoded once
    per identity)."""
    return encode_user_properties([(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1" if verified else "0")])


@dataclass(slots=True)
class BrokerAnswers:
    """Callbacks from the MQTT side into the gateway (each runs in the event loop).

    ``message(conn, topic, payload, qos, retain, ack)``: ``ack`` is the handle to return in a
    ``BrokerAck`` (None for QoS 0, or when the link acknowledges by itself)."""

    connected: Callable[[Hashable, bool], None]
    published: Callable[[Hashable, int], None]
    subscribed: Callable[[Hashable, int, int], None]
    unsubscribed: Callable[[Hashable, int], None]
    message: Callable[[Hashable, str, bytes, int, bool, Hashable | None], None]
    lost: Callable[[Hashable], None]


class _Connection:
    __slots__ = ("client", "closing", "inflight", "key", "pending", "ready", "tenant", "tokens")

    def __init__(self, key: Hashable, tenant: str | None = None) -> None:
        self.key = key
        self.tenant = tenant  # the node's organisation (None: the default one, or no node)
        self.client: Mqtt5Client | None = None
        self.ready = asyncio.Event()
        self.closing = False
        self.pending: list[BrokerPublish] = []  # publishes asked for before the CONNACK
        self.tokens: dict[int, int] = {}  # our packet id -> the gateway's token
        self.inflight = 0  # our QoS 1/2 publishes not yet confirmed


class BrokerLink:
    def __init__(
        self,
        host: str,
        port: int,
        answers: BrokerAnswers,
        *,
        gateway_client_id: str = "meshota-gateway",
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        max_connecting: int = 64,
        session_expiry: int = 0,
        persistent: bool = False,
        tenant_of: Callable[[str], str | None] | None = None,
        tenant_passwords: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.answers = answers
        self.gateway_client_id = gateway_client_id
        self.username = username
        self.password = password
        self.keepalive = keepalive
        # the gateway's own connection: a persistent session (aggregating mode) resumed at start
        self.persistent = persistent
        self.session_expiry = session_expiry
        self._conns: dict[Hashable, _Connection] = {}
        # MQTT connection attempts in flight at most; the rest wait their turn (a flood of
        # CONNECTs never becomes a flood of TCP connects to the broker)
        self.max_connecting = max_connecting
        self._connecting = asyncio.Semaphore(max_connecting)
        self.connecting = 0
        self.peak_connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # QoS 1/2 publishes sent and not yet confirmed
        self._last: _Connection | None = None  # the connection used last (backpressure hint)
        self._closed = False
        # verified identity -> organisation id (None / "default": the default organisation)
        self.tenant_of = tenant_of
        self.tenant_passwords = tenant_passwords or {}
        self._warned_tenants: set[str] = set()

    def _tenant(self, identity: str | None) -> str | None:
        if identity is None or self.tenant_of is None:
            return None
        tenant = self.tenant_of(identity)
        return None if tenant in (None, DEFAULT_TENANT) else tenant

    # --- lifecycle --------------------------------------------------------------------------------

    def _gateway_options(self) -> ConnectOptions:
        return ConnectOptions(
            self.gateway_client_id,
            keepalive=self.keepalive,
            clean_start=not self.persistent,
            session_expiry=self.session_expiry if self.persistent else 0,
            username=self.username,
            password=self.password,
        )

    def gateway_connected(self) -> bool:
        """The gateway's own connection is up (its ``/readyz``)."""
        conn = self._conns.get(GATEWAY_CONN)
        return conn is not None and conn.ready.is_set() and not conn.closing

    async def start(self) -> None:
        """Open the gateway's own connection; raises Mqtt5Error if the broker is unreachable."""
        conn = _Connection(GATEWAY_CONN)
        self._conns[GATEWAY_CONN] = conn
        try:
            await self._open(conn, self._gateway_options())
        except Mqtt5Error:
            self._conns.pop(GATEWAY_CONN, None)
            raise

    async def close(self) -> None:
        self._closed = True
        for key in list(self._conns):
            self._disconnect(key)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, conn: _Connection, options: ConnectOptions) -> None:
        """Connect ``conn``; on success it is ready and its queued publishes leave."""
        key = conn.key

        def on_message(m: PublishIn) -> None:
            topic = m.topic
            if is_tenant_topic(topic):  # an organisation's response: the node-visible name
                split = split_tenant_topic(topic)
                if split is not None:
                    topic = split[1]
            self.answers.message(key, topic, m.payload, m.qos, m.retain, (conn, m.mid) if m.qos else None)

        def on_published(mid: int, reason: int) -> None:
            token = conn.tokens.pop(mid, None)
            conn.inflight -= 1
            self.in_flight -= 1
            if reason >= 0x80:
                log.debug("broker refused a publish on %r (reason %#04x)", key, reason)
            if token is not None:
                self.answers.published(key, token)

        client, _ = await Mqtt5Client.connect(
            self.host, self.port, options, on_message, on_published, timeout=30, auto_ack=False
        )
        if self._conns.get(key) is not conn or conn.closing:  # disconnected while connecting
            client.close()
            return
        conn.client = client
        client.closed.add_done_callback(functools.partial(self._on_closed, conn))
        conn.ready.set()
        pending, conn.pending = conn.pending, []
        for a in pending:
            self._publish(a)

    def _on_closed(self, conn: _Connection, fut: asyncio.Future[None]) -> None:
        exc = fut.exception() if not fut.cancelled() else None
        if conn.closing or exc is None or self._conns.get(conn.key) is not conn:
            return
        del self._conns[conn.key]
        self.in_flight -= conn.inflight
        log.warning("broker connection %r lost: %s", conn.key, exc)
        if conn.key is GATEWAY_CONN and not self._closed:
            self._spawn(self._reconnect_gateway())
        self.answers.lost(conn.key)

    async def _reconnect_gateway(self) -> None:
        """The gateway's own connection came back: retry every few seconds (its persistent
        session, if any, keeps the subscriptions and what was in flight)."""
        delay = 1.0
        while not self._closed:
            await asyncio.sleep(delay)
            conn = _Connection(GATEWAY_CONN)
            self._conns[GATEWAY_CONN] = conn
            try:
                await self._open(conn, self._gateway_options())
            except Mqtt5Error as exc:
                self._conns.pop(GATEWAY_CONN, None)
                log.warning("broker connection %r: reconnect failed: %s", GATEWAY_CONN, exc)
                delay = min(delay * 2, 30.0)
                continue
            log.warning("broker connection %r re-established", GATEWAY_CONN)
            return

    # --- actions --------------------------------------------------------------------------------

    def run(self, action: BrokerAction) -> None:
        if isinstance(action, BrokerPublish):
            self._publish(action)
        elif isinstance(action, BrokerAck):
            self._ack(action)
        elif isinstance(action, BrokerConnect):
            self._spawn(self._connect(action))
        elif isinstance(action, BrokerSubscribe):
            self._spawn(self._subscribe(action))
        elif isinstance(action, BrokerUnsubscribe):
            self._spawn(self._unsubscribe(action))
        elif isinstance(action, BrokerDisconnect):
            self._disconnect(action.conn)

    def _ack(self, a: BrokerAck) -> None:
        handle: tuple[_Connection, int] = a.ack  # type: ignore[assignment]  # made by on_message
        conn, mid = handle
        client = conn.client
        if client is not None and not conn.closing:
            client.ack(mid)  # False: the connection it came on is gone; the broker resends it

    def _publish(self, a: BrokerPublish) -> None:
        conn = self._conns.get(a.conn)
        if conn is None:
            log.warning("publish on a closed broker connection %r dropped (topic %s)", a.conn, a.topic)
            return
        client = conn.client
        if client is None:
            conn.pending.append(a)
            return
        props = stamp_properties(a.device, a.verified) if a.device is not None else b"\x00"
        topic = a.topic
        if is_tenant_topic(topic):
            # the gateway alone puts a node's traffic under an organisation
            log.warning("publish on %s by %r dropped: /mender/t/ is the gateway's to choose", topic, a.conn)
            if a.token is not None:  # answered as delivered (QoS 0 semantics): never retried
                asyncio.get_running_loop().call_soon(self.answers.published, a.conn, a.token)
            return
        tenant = conn.tenant
        if conn.key is GATEWAY_CONN:  # QoS -1 (and aggregating mode): the stamp's organisation
            tenant = self._tenant(a.device if a.verified else None)
        if tenant is not None:
            topic = tenant_topic(topic, tenant)
        try:
            mid = client.publish(topic, a.payload, a.qos, props, a.retain)
        except (Mqtt5Error, ValueError) as exc:
            log.warning("broker publish on %r failed: %s (topic %s)", a.conn, exc, a.topic)
            return
        self._last = conn
        if mid:
            conn.inflight += 1
            self.in_flight += 1
            if a.token is not None:
                conn.tokens[mid] = a.token
        elif a.token is not None:  # QoS 0 with a token: confirmed once queued
            asyncio.get_running_loop().call_soon(self.answers.published, a.conn, a.token)

    async def _connect(self, a: BrokerConnect) -> None:
        will = None
        if a.will is not None:
            will = Will(a.will.topic, a.will.message, a.will.qos, a.will.retain)
        tenant = self._tenant(a.identity)
        username, password = self.username, self.password
        if tenant is not None:
            if will is not None:
                will = Will(tenant_topic(will.topic, tenant), will.payload, will.qos, will.retain)
            if tenant in self.tenant_passwords:  # the broker ACL: user = organisation id
                username, password = tenant, self.tenant_passwords[tenant]
            elif tenant not in self._warned_tenants:
                self._warned_tenants.add(tenant)
                log.warning(
                    "no broker password for organisation %s (--tenant-credentials): its nodes connect "
                    "as %r and the broker ACL will not deliver their responses",
                    tenant,
                    self.username,
                )
        options = ConnectOptions(
            a.client_id,
            keepalive=self.keepalive,
            clean_start=a.clean_session,
            session_expiry=0 if a.clean_session else _SESSION_FOREVER,
            username=username,
            password=password,
            will=will,
        )
        if a.conn in self._conns:
            self._disconnect(a.conn)
        conn = _Connection(a.conn, tenant)
        self._conns[a.conn] = conn
        async with self._connecting:
            if self._conns.get(a.conn) is not conn:  # the session ended while waiting its turn
                return
            self.connecting += 1
            self.peak_connecting = max(self.peak_connecting, self.connecting)
            try:
                await self._open(conn, options)
            except Mqtt5Error as exc:
                log.warning("broker refused MQTT connection for %r (%s): %s", a.client_id, a.conn, exc)
                if self._conns.get(a.conn) is conn:
                    del self._conns[a.conn]
                    self.answers.connected(a.conn, False)
                return
            finally:
                self.connecting -= 1
        if conn.client is not None:
            self.answers.connected(a.conn, True)

    async def _subscribe(self, a: BrokerSubscribe) -> None:
        conn = self._conns.get(a.conn)
        granted = 0x80
        if is_tenant_topic(a.topic_filter):  # only the gateway puts a node under an organisation
            log.warning("subscribe %s on %r refused: /mender/t/ is the gateway's", a.topic_filter, a.conn)
            conn = None
        if conn is not None:
            try:
                await conn.ready.wait()
                assert conn.client is not None
                (granted,) = await conn.client.subscribe([(tenant_topic(a.topic_filter, conn.tenant), a.qos)])
            except Mqtt5Error as exc:
                (log.debug if conn.closing else log.warning)(
                    "subscribe %s on %r failed: %s", a.topic_filter, a.conn, exc
                )
                granted = getattr(exc, "reason", 0x80)
        self.answers.subscribed(a.conn, a.token, granted)

    async def _unsubscribe(self, a: BrokerUnsubscribe) -> None:
        conn = self._conns.get(a.conn)
        if conn is not None:
            try:
                await conn.ready.wait()
                assert conn.client is not None
                await conn.client.unsubscribe([tenant_topic(a.topic_filter, conn.tenant)])
            except Mqtt5Error as exc:  # a connection closed meanwhile needs no unsubscribe
                (log.debug if conn.closing else log.warning)(
                    "unsubscribe %s on %r failed: %s", a.topic_filter, a.conn, exc
                )
        self.answers.unsubscribed(a.conn, a.token)

    def _disconnect(self, key: Hashable) -> None:
        conn = self._conns.pop(key, None)
        if conn is None:
            return
        conn.closing = True
        self.in_flight -= conn.inflight
        conn.inflight = 0
        conn.tokens.clear()
        if conn.client is not None:
            conn.client.close()  # DISCONNECT 0: the broker discards the will

    def backlog_hint(self) -> int:
        """O(1) hint, in packets: confirmations pending plus what the connection used last has
        not written yet."""
        last = self._last
        queued = last.client.write_backlog() if last is not None and last.client is not None else 0
        return self.in_flight + queued // _BYTES_PER_PACKET

    def outgoing_backlog(self) -> int:
        """Packets waiting, summed over connections (O(connections))."""
        queued = sum(c.client.write_backlog() for c in self._conns.values() if c.client is not None)
        return self.in_flight + queued // _BYTES_PER_PACKET
