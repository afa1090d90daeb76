"""The MQTT bridge driver: one aiomqtt (MQTT 5) connection, reconnects, answers exactly once.

- subscribes ``/mender/api/#`` and ``/mender/bulk/v1`` at QoS 1, as ``$share/<group>/...``
  when a share group is configured (several bridges then split the load);
- a persistent session (clean start off, session expiry ``session_expiry`` s): requests that
  arrive while the bridge reconnects wait in the broker;
- replies go out at QoS 1 without waiting for the PUBACK (a waiting task per reply held a
  dispatch slot for up to the publish timeout when the broker went away): each reply stays in an
  outbox until paho reports its PUBACK, and every reply still there is published again right
  after each reconnect;
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.api import ApiContext, Router
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
    pairs = getattr(properties, "UserProperty", None) or []
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
        self._backlog: deque[paho.MQTTMessage] = deque()
        self._reply_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._reply_props.UserProperty = [(BRIDGE_PROPERTY, config.client_id)]

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
        self._client, self._paho, self._inflight = client, inner, inflight

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._active >= self.config.max_concurrent:
            self._backlog.append(message)
        else:
            self._start(message)

    def _start(self, message: paho.MQTTMessage) -> None:
        self._active += 1
        task = asyncio.create_task(self._dispatch(message.topic, bytes(message.payload), message.properties))
        self._workers.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        self._active -= 1
        if self._backlog:
            self._start(self._backlog.popleft())

    # --- one message ----------------------------------------------------------------------------

    async def _dispatch(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        who = stamped_identity(properties)
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
        """Queue a reply at QoS 1; it leaves the outbox at its PUBACK, else goes again after a reconnect."""
        self._outbox[topic] = payload
        client = self._paho
        if client is None:
            return  # published after the next connect
        info = client.publish(topic, payload, qos=1, properties=self._reply_props)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self._inflight[info.mid] = (topic, payload)
        else:
            log.info("reply on %s deferred until reconnect (paho rc %s)", topic, info.rc)


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
