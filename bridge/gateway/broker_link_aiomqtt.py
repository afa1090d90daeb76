"""The gateway's former broker link, through aiomqtt (paho-mqtt underneath), kept only as the
same-run baseline of benchmarks/gateway_throughput.py (``meshota gateway --broker-client aiomqtt``).

It does not acknowledge after the node: paho acknowledges a QoS 1/2 message on receipt, so
``BrokerAck`` is ignored, and a gateway killed mid-delivery loses what the broker handed over.
The link in use is :mod:`bridge.gateway.broker_link`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Coroutine, Hashable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.gateway.broker_link import BrokerAnswers
from bridge.mqtt5 import Mqtt5Error
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

__all__ = ["AiomqttBrokerLink", "stamp_properties"]

_SESSION_FOREVER = 0xFFFFFFFF  # MQTT 3.1.1 CleanSession=0 semantics: the session never expires


class _PackedProperties(Properties):
    """MQTT 5 properties encoded once (``freeze``) instead of on every PUBLISH: paho packs them per
    message, which cost more than the whole rest of the gateway's QoS 0 path."""

    def freeze(self) -> None:
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        packed = self.__dict__.get("_packed")
        return packed if packed is not None else super().pack()  # type: ignore[no-any-return,no-untyped-call]


@functools.lru_cache(maxsize=16384)
def stamp_properties(device: str, verified: bool) -> Properties:
    """PUBLISH properties carrying the identity the gateway vouches for.

    Cached per identity: building a paho Properties object per message cost more than the rest of
    the gateway's QoS 0 path. paho only reads it when packing, so sharing it is safe; callers must
    not mutate the result."""
    props = _PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1" if verified else "0")]
    props.freeze()
    return props


log = logging.getLogger("meshota.gateway")


class _Connection:
    __slots__ = ("client", "closing", "reader", "ready")

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.ready = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.closing = False


class AiomqttBrokerLink:
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
    ) -> None:
        self.host = host
        self.port = port
        self.answers = answers
        self.gateway_client_id = gateway_client_id
        self.username = username
        self.password = password
        self.keepalive = keepalive
        self._conns: dict[Hashable, _Connection] = {}
        # MQTT connection attempts in flight at most; the rest wait their turn (a flood of
        # CONNECTs never becomes a flood of TCP connects to the broker)
        self.max_connecting = max_connecting
        self._connecting = asyncio.Semaphore(max_connecting)
        self.connecting = 0
        self.peak_connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # publishes handed to paho and not yet confirmed
        self._last_backlog = 0  # unsent packets of the connection used last

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the gateway's own connection; raises Mqtt5Error if the broker is unreachable."""
        client = self._client(self.gateway_client_id, clean_session=True, will=None)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise Mqtt5Error(str(exc)) from None
        conn = _Connection(client)
        conn.ready.set()
        self._conns[GATEWAY_CONN] = conn
        conn.reader = asyncio.create_task(self._read(GATEWAY_CONN, conn))

    async def close(self) -> None:
        for key in list(self._conns):
            await self._disconnect(key)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _client(self, client_id: str, *, clean_session: bool, will: aiomqtt.Will | None) -> aiomqtt.Client:
        # MQTT 5: user properties carry the stamped identity; clean_session maps to clean start
        # plus a session that never expires, as CleanSession=0 means in MQTT 3.1.1.
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if not clean_session:
            connect_props.SessionExpiryInterval = _SESSION_FOREVER
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=client_id,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=clean_session,
            properties=connect_props,
            will=will,
            keepalive=self.keepalive,
            timeout=30,
            max_queued_outgoing_messages=None,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- actions --------------------------------------------------------------------------------

    def run(self, action: BrokerAction) -> None:
        if isinstance(action, BrokerPublish):
            self._publish(action)
        elif isinstance(action, BrokerConnect):
            self._spawn(self._connect(action))
        elif isinstance(action, BrokerSubscribe):
            self._spawn(self._subscribe(action))
        elif isinstance(action, BrokerUnsubscribe):
            self._spawn(self._unsubscribe(action))
        elif isinstance(action, BrokerDisconnect):
            self._spawn(self._disconnect(action.conn))
        elif isinstance(action, BrokerAck):
            pass  # paho acknowledged it on receipt

    def _publish(self, a: BrokerPublish) -> None:
        conn = self._conns.get(a.conn)
        if conn is None:
            log.warning("publish on a closed broker connection %r dropped (topic %s)", a.conn, a.topic)
            return
        if a.qos == 0 and a.token is None and conn.ready.is_set():
            # paho's publish never blocks: it writes or queues. Awaiting a task per QoS 0 message
            # would only add latency; the loop order keeps messages in order.
            paho = conn.client._client
            props = stamp_properties(a.device, a.verified) if a.device is not None else None
            info = paho.publish(a.topic, a.payload, 0, a.retain, props)
            self._last_backlog = len(paho._out_packet)
            if info.rc != 0:
                log.warning("broker publish on %r failed rc=%s (topic %s)", a.conn, info.rc, a.topic)
            return
        self._spawn(self._publish_confirmed(conn, a))

    async def _publish_confirmed(self, conn: _Connection, a: BrokerPublish) -> None:
        self.in_flight += 1
        try:
            await conn.ready.wait()
            props = stamp_properties(a.device, a.verified) if a.device is not None else None
            await conn.client.publish(a.topic, a.payload, a.qos, a.retain, props, timeout=60)
        except aiomqtt.MqttError as exc:
            log.warning("broker publish on %r failed: %s (topic %s)", a.conn, exc, a.topic)
            return
        finally:
            self.in_flight -= 1
        if a.token is not None:
            self.answers.published(a.conn, a.token)

    async def _connect(self, a: BrokerConnect) -> None:
        will = None
        if a.will is not None:
            will = aiomqtt.Will(a.will.topic, a.will.message, a.will.qos, a.will.retain)
        client = self._client(a.client_id, clean_session=a.clean_session, will=will)
        conn = _Connection(client)
        old = self._conns.get(a.conn)
        if old is not None:
            await self._disconnect(a.conn)
        self._conns[a.conn] = conn
        async with self._connecting:
            if self._conns.get(a.conn) is not conn:  # the session ended while waiting its turn
                return
            self.connecting += 1
            self.peak_connecting = max(self.peak_connecting, self.connecting)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                log.warning("broker refused MQTT connection for %r (%s): %s", a.client_id, a.conn, exc)
                if self._conns.get(a.conn) is conn:
                    del self._conns[a.conn]
                self.answers.connected(a.conn, False)
                return
            finally:
                self.connecting -= 1
        if self._conns.get(a.conn) is not conn:  # disconnected while connecting
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            return
        conn.ready.set()
        conn.reader = asyncio.create_task(self._read(a.conn, conn))
        self.answers.connected(a.conn, True)

    async def _read(self, key: Hashable, conn: _Connection) -> None:
        try:
            async for m in conn.client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
                self.answers.message(key, m.topic.value, payload, m.qos, m.retain, None)
        except aiomqtt.MqttError as exc:
            if not conn.closing:
                log.warning("broker connection %r lost: %s", key, exc)
                if self._conns.get(key) is conn:
                    del self._conns[key]
                self.answers.lost(key)

    async def _subscribe(self, a: BrokerSubscribe) -> None:
        conn = self._conns.get(a.conn)
        granted = 0x80
        if conn is not None:
            try:
                await conn.ready.wait()
                result = await conn.client.subscribe(a.topic_filter, a.qos)
                first = result[0]
                granted = first if isinstance(first, int) else int(first.value)
            except aiomqtt.MqttError as exc:
                log.warning("subscribe %s on %r failed: %s", a.topic_filter, a.conn, exc)
        self.answers.subscribed(a.conn, a.token, granted)

    async def _unsubscribe(self, a: BrokerUnsubscribe) -> None:
        conn = self._conns.get(a.conn)
        if conn is not None:
            try:
                await conn.ready.wait()
                await conn.client.unsubscribe(a.topic_filter)
            except aiomqtt.MqttError as exc:
                log.warning("unsubscribe %s on %r failed: %s", a.topic_filter, a.conn, exc)
        self.answers.unsubscribed(a.conn, a.token)

    async def _disconnect(self, key: Hashable) -> None:
        conn = self._conns.pop(key, None)
        if conn is None:
            return
        conn.closing = True
        if conn.ready.is_set():
            with contextlib.suppress(Exception):
                await conn.client.__aexit__(None, None, None)
        if conn.reader is not None:
            conn.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.reader

    def backlog_hint(self) -> int:
        """O(1) hint: unsent packets on the connection used last, plus confirmations pending."""
        return self._last_backlog + self.in_flight

    def outgoing_backlog(self) -> int:
        """Packets paho has queued but not written, summed over connections (O(connections))."""
        total = self.in_flight
        for conn in self._conns.values():
            paho = conn.client._client
            total += len(getattr(paho, "_out_packet", ()))
        return total
