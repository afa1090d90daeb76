"""The MQTT bridge driver: one aiomqtt (MQTT 5) connection, reconnects, answers exactly once.

- subscribes ``/mender/api/#`` and ``/mender/bulk/v1`` at QoS 1, as ``$share/<group>/...``
  when a share group is configured (several bridges then split the load);
- a persistent session (clean start off, session expiry ``session_expiry`` s): requests that
  arrive while the bridge reconnects wait in the broker;
- incoming QoS 0/1 PUBLISHes are decoded by :func:`decode_publish` (only the user properties are
  read; paho's decoder takes anything else), reply properties are encoded once;
- replies go out at QoS 1 (``reply_qos=0`` possible) without waiting for the PUBACK (a waiting
  task per reply held a dispatch slot for up to the publish timeout when the broker went away):
  each reply stays in an outbox until paho reports its PUBACK, and every reply still there is
  published again right after each reconnect;
- a QoS 1 redelivery of a request id is answered from the :class:`ReplyCache`, never re-run, so a
  node that re-sends under the same id after a broker restart gets the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.api import ApiContext, Router
from bridge.broker_link import PackedProperties
from firmware_proto.api_envelope import (
    API_TOPIC_PREFIX,
    BULK_TOPIC,
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
    response_topic,
)
from firmware_proto.sealed import RecordKey

from ._adapter import BridgePolicy, MqttApiAdapter, StampedIdentity
from ._bulk import SealedRecordService
from ._dedupe import ReplyCache

__all__ = [
    "BridgeStats",
    "MqttBridge",
    "MqttBridgeConfig",
    "bridge_service",
    "parse_broker_url",
    "stamped_identity",
]

log = logging.getLogger("meshota.bridge")
BRIDGE_PROPERTY = "meshota-bridge"


@dataclass(frozen=True, slots=True)
class MqttBridgeConfig:
    host: str
    port: int
    client_id: str = "meshota-bridge"
    username: str | None = None
    password: str | None = None
    share_group: str | None = None  # e.g. "meshota": subscribe $share/meshota/...
    policy: BridgePolicy = field(default_factory=BridgePolicy)
    dedupe_ttl: float = 120.0
    max_concurrent: int = 256
    # 1: a reply stays in the outbox until its PUBACK (and the gateway retransmits it to the node).
    # 0 is safe too: a lost reply is answered again from the ReplyCache when the node re-sends
    # its request id; it measured no faster (docs/mqtt_bridge.md), so 1 stays the default
    reply_qos: int = 1
    keepalive: int = 30
    session_expiry: int = 3600
    reconnect_delay: float = 0.2
    max_reconnect_delay: float = 5.0


@dataclass(slots=True)
class BridgeStats:
    handled: int = 0
    duplicates: int = 0
    ignored: int = 0
    batches: int = 0
    reconnects: int = 0


def stamped_identity(properties: Properties | None) -> StampedIdentity | None:
    """The identity the gateway stamped on a PUBLISH; None when there is none."""
    return stamped_identity_of(getattr(properties, "UserProperty", None) or [])


def stamped_identity_of(pairs: list[tuple[str, str]]) -> StampedIdentity | None:
    """The identity in a PUBLISH's user properties; None when there is none (or two disagree)."""
    device = verified = None
    for name, value in pairs:
        if name == DEVICE_PROPERTY:
            if device is not None and device != value:
                return None  # two different stamps: trust neither
            device = value
        elif name == VERIFIED_PROPERTY:
            verified = value
    if not device or any(c in device for c in "/+#\x00"):
        return None
    return StampedIdentity(device, verified == "1")


class MqttBridge:
    def __init__(
        self,
        router: Router[Any],
        config: MqttBridgeConfig,
        record_keys: Mapping[str, RecordKey] | None = None,
    ) -> None:
        self.config = config
        self.router = router
        ctx = router.context
        self.records: SealedRecordService | None = None
        if isinstance(ctx, ApiContext):
            self.records = SealedRecordService(router, ctx.store, record_keys or {})
        self.adapter = MqttApiAdapter(
            router, config.policy, bind_token=self.records.bind_token if self.records else None
        )
        self.cache = ReplyCache(config.dedupe_ttl)
        self.stats = BridgeStats()
        self.ready = asyncio.Event()
        # replies not acknowledged by the broker yet, by topic (one reply per request topic)
        self._outbox: dict[str, bytes] = {}
        self._inflight: dict[int, tuple[str, bytes]] = {}  # paho mid -> outbox entry, this connection
        self._client: aiomqtt.Client | None = None
        self._paho: paho.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._active = 0  # dispatches running; beyond max_concurrent messages wait in _backlog
        self._backlog: deque[tuple[str, bytes, list[tuple[str, str]]]] = deque()
        self._reply_props = PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._reply_props.UserProperty = [(BRIDGE_PROPERTY, config.client_id)]
        self._reply_props.freeze()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> MqttBridge:
        self._runner = asyncio.create_task(self._run(), name="mqtt-bridge")
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            await self.stop()
            raise RuntimeError(f"MQTT bridge could not subscribe at {self.config.host}:{self.config.port}")
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for task in list(self._workers):
            task.cancel()
        for task in list(self._workers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _filters(self) -> list[str]:
        filters = [API_TOPIC_PREFIX + "#", BULK_TOPIC]
        if self.config.share_group:
            filters = [f"$share/{self.config.share_group}/{f}" for f in filters]
        return filters

    async def _run(self) -> None:
        delay = self.config.reconnect_delay
        first = True
        while True:
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = self.config.session_expiry
            client = aiomqtt.Client(
                self.config.host,
                self.config.port,
                identifier=self.config.client_id,
                username=self.config.username,
                password=self.config.password,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=connect_props,
                keepalive=self.config.keepalive,
                timeout=10,
                max_queued_outgoing_messages=None,
            )
            try:
                async with client:
                    self._attach(client)
                    for topic_filter in self._filters():
                        await client.subscribe(topic_filter, qos=1)
                    if not first:
                        self.stats.reconnects += 1
                        log.info("MQTT bridge reconnected to %s:%d", self.config.host, self.config.port)
                    first = False
                    delay = self.config.reconnect_delay
                    self.ready.set()
                    for topic, payload in list(self._outbox.items()):
                        self._publish(topic, payload)
                    # messages reach _on_message straight from paho's callback; aiomqtt's iterator
                    # (a task and an asyncio.wait per message) only tells us of the disconnection
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                log.warning("MQTT bridge connection lost (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self._client = self._paho = None
                self._inflight = {}  # that connection's mids mean nothing to the next one
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.max_reconnect_delay)

    def _attach(self, client: aiomqtt.Client) -> None:
        """Use this connection for replies; learn of each reply's PUBACK from paho's callback."""
        inner = client._client  # aiomqtt's paho client: publish without a task waiting per reply
        aiomqtt_on_publish = cast(Callable[..., None], inner.on_publish)
        inflight: dict[int, tuple[str, bytes]] = {}

        def on_publish(c: paho.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
            entry = inflight.pop(mid, None)
            if entry is not None and self._outbox.get(entry[0]) is entry[1]:
                del self._outbox[entry[0]]
            aiomqtt_on_publish(c, userdata, mid, rc, props)

        inner.on_publish = on_publish
        inner.on_message = self._on_message
        self._lean_publish_decoding(inner)
        self._direct_write_registration(client, inner)
        self._client, self._paho, self._inflight = client, inner, inflight

    def _lean_publish_decoding(self, inner: paho.Client) -> None:
        """Decode incoming QoS 0/1 PUBLISHes here instead of in paho (its MQTT 5 property objects
        cost about a third of its read path); anything unusual goes through paho's own decoder."""
        paho_handle = inner._handle_publish

        def handle_publish() -> MQTTErrorCode:
            packet = inner._in_packet
            qos = (packet["command"] & 0x06) >> 1
            try:
                topic, mid, pairs, payload = decode_publish(packet["packet"], qos)
            except PublishDecodeError:
                return paho_handle()  # QoS 2, topic alias, an odd property, or malformed: paho decides
            try:
                self._accept(topic, payload, pairs)
            except Exception:
                log.exception("dropped a message on %s", topic)
            if qos == 1:
                return inner._send_puback(mid)
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        inner._handle_publish = handle_publish  # type: ignore[method-assign]

    @staticmethod
    def _direct_write_registration(client: aiomqtt.Client, inner: paho.Client) -> None:
        """Register paho's socket for writing straight on the loop when a reply is published from it.

        aiomqtt's hook always goes through ``call_soon_threadsafe`` (a self-pipe write and one more
        loop turn before the reply burst leaves); from the loop's own thread that detour buys nothing.
        """
        loop = asyncio.get_running_loop()
        threadsafe = cast(Callable[..., None], inner.on_socket_register_write)
        disconnected = cast("asyncio.Future[Any]", client._disconnected)

        def write() -> None:
            try:
                inner.loop_write()
            except Exception as exc:  # a broken pipe: aiomqtt's runner sees the disconnection
                if not disconnected.done():
                    disconnected.set_exception(exc)

        def register_write(c: paho.Client, userdata: Any, sock: Any) -> None:
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if on_loop:
                loop.add_writer(sock.fileno(), write)
            else:
                threadsafe(c, userdata, sock)

        inner.on_socket_register_write = register_write

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        """Messages paho decoded itself (see _lean_publish_decoding)."""
        pairs = getattr(message.properties, "UserProperty", None) or []
        self._accept(message.topic, bytes(message.payload), pairs)

    def _accept(self, topic: str, payload: bytes, pairs: list[tuple[str, str]]) -> None:
        if self._active >= self.config.max_concurrent:
            self._backlog.append((topic, payload, pairs))
        else:
            self._start(topic, payload, pairs)

    def _start(self, topic: str, payload: bytes, pairs: list[tuple[str, str]]) -> None:
        self._active += 1
        task = asyncio.create_task(self._dispatch(topic, payload, pairs))
        self._workers.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        self._active -= 1
        if self._backlog:
            self._start(*self._backlog.popleft())

    # --- one message ----------------------------------------------------------------------------

    async def _dispatch(self, topic: str, payload: bytes, pairs: list[tuple[str, str]]) -> None:
        who = stamped_identity_of(pairs)
        if who is None:
            self.stats.ignored += 1
            log.warning("ignored %s: no device identity stamped by a gateway", topic)
            return
        rid = self.adapter.request_id_of(payload)
        if rid is None:
            await self._answer(topic, payload, who)  # the adapter logs and drops it
            return
        loop = asyncio.get_running_loop()
        is_new, cached = self.cache.begin(who.device, rid, payload, loop.time())
        if not is_new:
            self.stats.duplicates += 1
            if cached is not None:
                self._publish(response_topic(who.device, rid), cached)
            return
        try:
            reply = await self._answer(topic, payload, who)
        except Exception:
            self.cache.forget(who.device, rid)
            log.exception("request %s from %s failed", rid, who.device)
            return
        if reply is None:
            self.cache.forget(who.device, rid)
            return
        self.cache.finish(who.device, rid, reply[1], loop.time())
        self._publish(*reply)

    async def _answer(self, topic: str, payload: bytes, who: StampedIdentity) -> tuple[str, bytes] | None:
        if topic == BULK_TOPIC:
            if self.records is None:
                return None
            if self.config.policy.require_verified and not who.verified:
                log.info("bulk batch from unverified %s refused", who.device)
                return None
            batch_id, reply = await self.records.handle_batch(payload)
            self.stats.batches += 1
            return None if batch_id is None else (response_topic(who.device, batch_id), reply)
        answer = await self.adapter.handle(topic, payload, who)
        if answer is None:
            return None
        self.stats.handled += 1
        return answer.topic, answer.payload

    def _publish(self, topic: str, payload: bytes) -> None:
        """Send a reply; one that cannot go out now waits in the outbox for the next connect.

        QoS 1 (default): it stays in the outbox until its PUBACK. QoS 0: it leaves the outbox once
        paho took it; if the connection then drops, the node's re-sent request is answered from
        the ReplyCache.
        """
        self._outbox[topic] = payload
        client = self._paho
        if client is None:
            return  # published after the next connect
        qos = self.config.reply_qos
        info = client.publish(topic, payload, qos=qos, properties=self._reply_props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            log.info("reply on %s deferred until reconnect (paho rc %s)", topic, info.rc)
        elif qos:
            self._inflight[info.mid] = (topic, payload)
        else:
            del self._outbox[topic]


class PublishDecodeError(ValueError):
    """A PUBLISH the lean decoder leaves to paho."""


# MQTT 5 PUBLISH properties the lean decoder skips: identifier -> fixed size, or -1 for a
# two-byte-length string/binary (user properties, 0x26, are read; anything else goes to paho)
_SKIPPED_PROPERTIES = {0x01: 1, 0x02: 4, 0x03: -1, 0x08: -1, 0x09: -1}


def decode_publish(packet: bytes | bytearray, qos: int) -> tuple[str, int, list[tuple[str, str]], bytes]:
    """(topic, packet id, user properties, payload) of an MQTT 5 PUBLISH body (after the fixed header).

    Raises PublishDecodeError for QoS 2, a topic alias or subscription identifier, and anything
    malformed, so that paho's decoder (and its error handling) takes those.
    """
    try:
        if qos > 1:
            raise PublishDecodeError("QoS 2")
        end = 2 + int.from_bytes(packet[0:2], "big")
        topic = bytes(packet[2:end]).decode()
        mid = 0
        if qos:
            mid = int.from_bytes(packet[end : end + 2], "big")
            end += 2
        length = shift = 0
        while True:
            byte = packet[end]
            end += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 21:
                raise PublishDecodeError("bad property length")
        pos, stop = end, end + length
        if not topic or stop > len(packet) or (qos and not mid):
            raise PublishDecodeError("malformed PUBLISH")
        pairs: list[tuple[str, str]] = []
        while pos < stop:
            ident = packet[pos]
            pos += 1
            if ident == 0x26:
                strings = []
                for _ in range(2):
                    size = int.from_bytes(packet[pos : pos + 2], "big")
                    strings.append(bytes(packet[pos + 2 : pos + 2 + size]).decode())
                    pos += 2 + size
                pairs.append((strings[0], strings[1]))
                continue
            skip = _SKIPPED_PROPERTIES.get(ident)
            if skip is None:
                raise PublishDecodeError(f"property {ident:#x}")
            pos += skip if skip > 0 else 2 + int.from_bytes(packet[pos : pos + 2], "big")
        if pos != stop:
            raise PublishDecodeError("properties overrun their length")
        return topic, mid, pairs, bytes(packet[stop:])
    except (IndexError, UnicodeDecodeError) as exc:
        raise PublishDecodeError(str(exc)) from None


def bridge_service(config: MqttBridgeConfig, record_keys: Mapping[str, RecordKey] | None = None) -> Any:
    """A ``bridge.http.Service``: run the MQTT bridge next to the HTTP adapter, same loop and store."""

    async def start(router: Router[Any]) -> Any:
        bridge = await MqttBridge(router, config, record_keys).start()
        return bridge.stop

    return start


def parse_broker_url(value: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` (or ``HOST:PORT``) -> (host, port); ValueError naming the value."""
    rest = value[len("mqtt://") :] if value.startswith("mqtt://") else value
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"bad broker URL {value!r} (expected mqtt://HOST:PORT)")
    return host.strip("[]"), int(port)
