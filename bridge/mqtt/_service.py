"""The MQTT bridge driver: one MQTT 5 connection (bridge.mqtt5.Mqtt5Client), reconnects, answers exactly once.

- subscribes ``/mender/api/#`` and ``/mender/bulk/v1`` at QoS 1, and the organisations' copies
  ``/mender/t/+/api/#``, ``/mender/t/+/bulk/v1`` (wire/tenant_topics.py), as
  ``$share/<group>/...`` when a share group is configured (several bridges then split the load);
- a persistent session (clean start off, session expiry ``session_expiry`` s): requests that
  arrive while the bridge reconnects wait in the broker;
- the client is :class:`bridge.mqtt5.Mqtt5Client` (one read parses every packet it brought, one
  write per event-loop turn carries every reply and PUBACK), not paho/aiomqtt, whose per-packet
  syscalls, property objects and tasks were most of the MQTT path's own cost;
- replies go out at QoS 1 (``reply_qos=0`` possible) without waiting for the PUBACK: each reply
  stays in an outbox until its PUBACK arrives, and every reply still there is published again
  right after each reconnect;
- a QoS 1 redelivery of a request id is answered from the :class:`ReplyCache`, never re-run, so a
  node that re-sends under the same id after a broker restart gets the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.api import AdapterServices, Claim, Router
from bridge.mqtt._adapter import BridgePolicy, MqttApiAdapter, StampedIdentity
from bridge.mqtt._bulk import SealedRecordService
from bridge.mqtt._dedupe import ReplyCache
from bridge.mqtt5 import ConnectOptions, Mqtt5Client, Mqtt5Error, PublishIn, encode_user_properties
from bridge.observe import process_metrics
from wire.envelope import (
    API_TOPIC_PREFIX,
    BULK_TOPIC,
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
)
from wire.sealed import RecordKey
from wire.tenant_topics import TENANT_TOPIC_PREFIX, split_tenant_topic

__all__ = [
    "BridgeStats",
    "MqttBridge",
    "MqttBridgeConfig",
    "bridge_service",
    "stamped_identity_of",
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
    max_concurrent: int = 256  # bulk batches (and API requests when group_max is 1) at once
    # most API requests run in one group commit (one transaction); 1 runs each on its own
    group_max: int = 64
    # 1: a reply stays in the outbox until its PUBACK (and the gateway retransmits it to the node).
    # 0 is safe too: a lost reply is answered again from the ReplyCache when the node re-sends
    # its request id
    reply_qos: int = 1
    keepalive: int = 30
    session_expiry: int = 3600
    reconnect_delay: float = 0.2
    max_reconnect_delay: float = 5.0
    # the request log in the database (bridge.store.RequestLog): a redelivery that reaches another
    # worker is answered with the first worker's reply, never run twice; rows live this long (s)
    request_log: bool = True
    request_log_ttl: float = 600.0
    # on stop: seconds to answer the requests already acknowledged to the broker (the rest stay
    # unacknowledged with the broker, redelivered to the persistent session on the next connect)
    drain_on_stop: float = 10.0


@dataclass(frozen=True, slots=True)
class _Duplicate:
    """A request another worker answered already (its request-log row); ``reply``: its answer."""

    reply: bytes | None


_Outcome = tuple[str, bytes] | Exception | None | _Duplicate
_Admitted = tuple["StampedIdentity", str, str, bytes]  # identity, request id, topic, payload


@dataclass(slots=True)
class BridgeStats:
    handled: int = 0
    duplicates: int = 0
    ignored: int = 0
    batches: int = 0
    reconnects: int = 0
    groups: int = 0
    group_fallbacks: int = 0


def _is_bulk(topic: str) -> bool:
    return topic == BULK_TOPIC or (topic.startswith(TENANT_TOPIC_PREFIX) and topic.endswith("/bulk/v1"))


def stamped_identity_of(pairs: list[tuple[str, str]], tenant: str = "default") -> StampedIdentity | None:
    """The identity in a PUBLISH's user properties; None when there is none (or two disagree).
    ``tenant``: the organisation of the topic it came on."""
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
    return StampedIdentity(device, verified == "1", tenant)


class MqttBridge:
    def __init__(
        self,
        router: Router[Any],
        config: MqttBridgeConfig,
        record_keys: Mapping[str, RecordKey] | None = None,
    ) -> None:
        self.config = config
        self.router = router
        # the store operations this adapter needs (group commit, sealed-record state); None when
        # the router is not built on an ApiContext (then: no grouping, no sealed records)
        self.services = AdapterServices.of(router, request_log_ttl=config.request_log_ttl)
        self.records: SealedRecordService | None = None
        if self.services is not None:
            self.records = SealedRecordService(router, self.services, record_keys or {})
        self.adapter = MqttApiAdapter(
            router, config.policy, bind_token=self.records.bind_token if self.records else None
        )
        self.cache = ReplyCache(config.dedupe_ttl)
        self.stats = BridgeStats()
        self.ready = asyncio.Event()
        # replies not acknowledged by the broker yet, by topic (one reply per request topic)
        self._outbox: dict[str, bytes] = {}
        self._inflight: dict[int, tuple[str, bytes]] = {}  # packet id -> outbox entry, this connection
        self._client: Mqtt5Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._active = 0  # dispatches running; beyond max_concurrent messages wait in _backlog
        self._backlog: deque[tuple[str, bytes, list[tuple[str, str]]]] = deque()
        # API requests wait here for the group-commit task (bulk batches are groups already)
        self._queue: deque[tuple[str, bytes, list[tuple[str, str]]]] = deque()
        self._group_task: asyncio.Task[None] | None = None
        self._reply_props = encode_user_properties([(BRIDGE_PROPERTY, config.client_id)])
        self.metrics = process_metrics()
        self._unexport = [
            self.metrics.gauge_source("meshota_queue_depth", lambda: len(self._queue), "group_queue"),
            self.metrics.gauge_source("meshota_queue_depth", lambda: len(self._backlog), "backlog"),
            self.metrics.gauge_source("meshota_queue_depth", lambda: len(self._outbox), "unacked_replies"),
            self.metrics.gauge_source("meshota_queue_depth", lambda: self._active, "running"),
        ]

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> MqttBridge:
        self._runner = asyncio.create_task(self._run(), name="mqtt-bridge")
        if self.services is not None and self.config.request_log:
            # every worker runs it; the one holding its lock prunes the request log
            prune = asyncio.create_task(self.services.prune_job().run(), name="request-log-prune")
            self._workers.add(prune)
            prune.add_done_callback(self._workers.discard)
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            await self.stop()
            raise RuntimeError(f"MQTT bridge could not subscribe at {self.config.host}:{self.config.port}")
        return self

    def busy(self) -> int:
        """Requests accepted (acknowledged to the broker) and not answered yet."""
        return len(self._queue) + len(self._backlog) + self._active + (self._group_task is not None)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop; with ``drain`` > 0 first stop reading (what the broker sends from then on stays
        unacknowledged with it, for the persistent session's next connect) and answer, for up to
        ``drain`` seconds, every request already acknowledged."""
        if drain > 0 and self._client is not None:
            self._client.pause_reading()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain
            while self.busy() and loop.time() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0)  # let the last replies' write go out
            if self.busy():
                log.warning("MQTT bridge stopped with %d acknowledged requests unanswered", self.busy())
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for task in list(self._workers):
            task.cancel()
        for task in list(self._workers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for unexport in self._unexport:
            unexport()

    def _filters(self) -> list[str]:
        filters = [
            API_TOPIC_PREFIX + "#",
            BULK_TOPIC,
            TENANT_TOPIC_PREFIX + "+/api/#",
            TENANT_TOPIC_PREFIX + "+/bulk/v1",
        ]
        if self.config.share_group:
            filters = [f"$share/{self.config.share_group}/{f}" for f in filters]
        return filters

    async def _run(self) -> None:
        delay = self.config.reconnect_delay
        first = True
        cfg = self.config
        options = ConnectOptions(
            cfg.client_id,
            keepalive=cfg.keepalive,
            clean_start=False,
            session_expiry=cfg.session_expiry,
            username=cfg.username,
            password=cfg.password,
        )
        while True:
            client: Mqtt5Client | None = None
            try:
                client, _ = await Mqtt5Client.connect(
                    cfg.host, cfg.port, options, self._on_message, self._on_published
                )
                await client.subscribe([(topic_filter, 1) for topic_filter in self._filters()])
                self._client, self._inflight = client, {}
                if not first:
                    self.stats.reconnects += 1
                    log.info("MQTT bridge reconnected to %s:%d", cfg.host, cfg.port)
                first = False
                delay = cfg.reconnect_delay
                self.ready.set()
                for topic, payload in list(self._outbox.items()):
                    self._publish(topic, payload)
                await client.closed
                raise Mqtt5Error("connection closed")
            except Mqtt5Error as exc:
                log.warning("MQTT bridge connection lost (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self._client = None
                self._inflight = {}  # that connection's packet ids mean nothing to the next one
                if client is not None:
                    client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.max_reconnect_delay)

    def _on_published(self, mid: int, reason: int = 0) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is not None and self._outbox.get(entry[0]) is entry[1]:
            del self._outbox[entry[0]]

    def _on_message(self, message: PublishIn) -> None:
        try:
            self._accept(message.topic, message.payload, message.user_properties)
        except Exception:
            log.exception("dropped a message on %s", message.topic)

    def _accept(self, topic: str, payload: bytes, pairs: list[tuple[str, str]]) -> None:
        if self.services is not None and self.config.group_max > 1 and not _is_bulk(topic):
            self._queue.append((topic, payload, pairs))
            if self._group_task is None:
                self._group_task = asyncio.create_task(self._groups())
                self._workers.add(self._group_task)
                self._group_task.add_done_callback(self._workers.discard)
            return
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

    async def _admit(
        self, topic: str, payload: bytes, pairs: list[tuple[str, str]]
    ) -> tuple[StampedIdentity, str] | None:
        """(identity, request id) of a request to run now; None when it is answered or dropped."""
        split = split_tenant_topic(topic)
        if split is None:
            self.stats.ignored += 1
            log.warning("ignored %s: not an organisation's device-API topic", topic)
            return None
        who = stamped_identity_of(pairs, split[0])
        if who is None:
            self.stats.ignored += 1
            log.warning("ignored %s: no device identity stamped by a gateway", topic)
            return None
        rid = self.adapter.request_id_of(payload)
        if rid is None:
            await self._answer(topic, payload, who)  # the adapter logs and drops it
            return None
        is_new, cached = self.cache.begin(who.key, rid, payload, asyncio.get_running_loop().time())
        if not is_new:
            self.stats.duplicates += 1
            self.metrics.duplicates.labels("memory").inc()
            if cached is not None:
                self._publish(who.reply_topic(rid), cached)
            return None
        return who, rid

    def _complete(self, who: StampedIdentity, rid: str, outcome: _Outcome) -> None:
        if isinstance(outcome, _Duplicate):
            # another worker answered it (its request-log row): the same reply, not run again
            self.stats.duplicates += 1
            self.metrics.duplicates.labels("database").inc()
            if outcome.reply is None:
                self.cache.forget(who.key, rid)
                return
            self.cache.finish(who.key, rid, outcome.reply, asyncio.get_running_loop().time())
            self._publish(who.reply_topic(rid), outcome.reply)
            return
        if isinstance(outcome, Exception):
            self.cache.forget(who.key, rid)
            log.error("request %s from %s failed", rid, who.key, exc_info=outcome)
            return
        if outcome is None:
            self.cache.forget(who.key, rid)
            return
        self.cache.finish(who.key, rid, outcome[1], asyncio.get_running_loop().time())
        self._publish(*outcome)

    async def _outcome(
        self, topic: str, payload: bytes, who: StampedIdentity
    ) -> tuple[str, bytes] | Exception | None:
        try:
            return await self._answer(topic, payload, who)
        except Exception as exc:
            return exc

    async def _dispatch(self, topic: str, payload: bytes, pairs: list[tuple[str, str]]) -> None:
        if self.services is not None and not _is_bulk(topic):
            await self._run_group([(topic, payload, pairs)])  # its own transaction, logged
            return
        admitted = await self._admit(topic, payload, pairs)
        if admitted is not None:
            self._complete(*admitted, await self._outcome(topic, payload, admitted[0]))

    # --- group commit of API requests ---------------------------------------------------------------

    async def _groups(self) -> None:
        """Run queued API requests in groups, each group in one database transaction."""
        try:
            while self._queue:
                size = min(len(self._queue), self.config.group_max)
                await self._run_group([self._queue.popleft() for _ in range(size)])
                # let the loop send this group's replies and read what arrived meanwhile
                # (handlers on SQLite never suspend: without this, replies wait for every group)
                await asyncio.sleep(0)
        finally:
            self._group_task = None

    async def _run_group(self, group: list[tuple[str, bytes, list[tuple[str, str]]]]) -> None:
        """Group commit: the group's requests run in arrival order in ONE transaction
        (:meth:`bridge.api.AdapterServices.group_commit`), and their replies leave only after it committed.

        The same transaction claims each request in the request log and stores its reply
        (:class:`bridge.store.RequestLog`): a request another worker already answered is
        answered with that worker's reply and not run; one another worker is running right now
        waits for its commit. A request whose handler fails after it may have written (e.g. a
        409 raised inside its transaction) fails the group: nothing of it is kept and every
        request of the group runs again on its own, as it would without grouping. Same
        handlers, same answers; what is saved is a transaction (connection, BEGIN, COMMIT,
        writer lock) per request.
        """
        todo: list[tuple[StampedIdentity, str, str, bytes]] = []
        for topic, payload, pairs in group:
            admitted = await self._admit(topic, payload, pairs)
            if admitted is not None:
                todo.append((*admitted, topic, payload))
        if not todo:
            return
        outcomes: list[_Outcome] | None = None
        if len(todo) > 1 or self.config.request_log:
            outcomes = await self._run_together(todo)
            self.metrics.group_size.observe(len(todo))  # requests per transaction, 1 included
            if len(todo) > 1:
                self.metrics.group_commits.inc()
                self.stats.groups += 1
            if outcomes is None and len(todo) > 1:
                self.stats.group_fallbacks += 1
                self.metrics.group_fallbacks.inc()
        if outcomes is None:
            outcomes = [await self._run_alone(who, rid, topic, payload) for who, rid, topic, payload in todo]
        for (who, rid, _, _), outcome in zip(todo, outcomes, strict=True):
            self._complete(who, rid, outcome)

    async def _run_together(self, todo: list[_Admitted]) -> list[_Outcome] | None:
        """Run ``todo`` in one transaction; None when it failed (then nothing of it was kept)."""
        assert self.services is not None
        logged = self.config.request_log
        outcomes: list[_Outcome] = []
        async with self.services.group_commit() as shared:
            try:
                if logged:
                    keys = [(w.key, rid, ReplyCache.digest(p)) for w, rid, _, p in todo]
                    claims = await self.services.claim_requests(keys)
                else:
                    claims = [Claim(True, None)] * len(todo)
                replies: list[tuple[str, str, bytes]] = []
                for (who, rid, topic, payload), claim in zip(todo, claims, strict=True):
                    if not claim.new:
                        outcomes.append(_Duplicate(claim.reply))
                        continue
                    outcome = await self._outcome(topic, payload, who)
                    if shared.failed:
                        break
                    outcomes.append(outcome)
                    if logged and isinstance(outcome, tuple):
                        replies.append((who.key, rid, outcome[1]))
                if logged and not shared.failed:
                    await self.services.record_replies(replies)
            except Exception:  # the log's statements failed (connection lost, deadlock victim)
                log.warning("group of %d requests rolled back", len(todo), exc_info=True)
                shared.failed = True
        return None if shared.failed else outcomes

    async def _run_alone(self, who: StampedIdentity, rid: str, topic: str, payload: bytes) -> _Outcome:
        """One request after its group failed: in a transaction of its own with its log entry;
        if it fails inside that (its handler's error after a write), it runs once more without
        (its own transactions; that is how an error such as a 409 is answered) and only then is
        its reply logged, in a transaction of its own."""
        if self.services is None:
            return await self._outcome(topic, payload, who)
        outcomes = await self._run_together([(who, rid, topic, payload)])
        if outcomes is not None:
            return outcomes[0]
        outcome = await self._outcome(topic, payload, who)
        if not self.config.request_log or not isinstance(outcome, tuple):
            return outcome
        try:
            async with self.services.group_commit():
                digest = ReplyCache.digest(payload)
                claim = (await self.services.claim_requests([(who.key, rid, digest)]))[0]
                if claim.new:
                    await self.services.record_replies([(who.key, rid, outcome[1])])
                else:
                    return _Duplicate(claim.reply)
        except Exception:
            log.warning("reply of %s from %s not logged", rid, who.device, exc_info=True)
        return outcome

    async def _answer(self, topic: str, payload: bytes, who: StampedIdentity) -> tuple[str, bytes] | None:
        split = split_tenant_topic(topic)
        visible = split[1] if split is not None else topic  # _admit dropped the others
        if visible == BULK_TOPIC:
            if self.records is None:
                return None
            if self.config.policy.require_verified and not who.verified:
                log.info("bulk batch from unverified %s refused", who.device)
                return None
            batch_id, reply = await self.records.handle_batch(payload, tenant=who.tenant)
            self.stats.batches += 1
            return None if batch_id is None else (who.reply_topic(batch_id), reply)
        answer = await self.adapter.handle(visible, payload, who)
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
        client = self._client
        if client is None:
            return  # published after the next connect
        qos = self.config.reply_qos
        try:
            mid = client.publish(topic, payload, qos, self._reply_props)
        except Mqtt5Error as exc:
            log.info("reply on %s deferred until reconnect (%s)", topic, exc)
            return
        if qos:
            self._inflight[mid] = (topic, payload)
        else:
            del self._outbox[topic]


def bridge_service(config: MqttBridgeConfig, record_keys: Mapping[str, RecordKey] | None = None) -> Any:
    """A ``bridge.http.Service``: run the MQTT bridge next to the HTTP adapter, same loop and store."""

    async def start(router: Router[Any]) -> Any:
        bridge = await MqttBridge(router, config, record_keys).start()

        async def stop() -> None:
            await bridge.stop(drain=config.drain_on_stop)

        return stop

    return start
