"""The Mender device API over MQTT-SN: :class:`MqttSnDevice`, a :class:`DeviceApi` implementation.

Path of a call: node → MQTT-SN client (plain :class:`~firmware_proto.aio.mqttsn_udp.UdpClient` or
:class:`~firmware_proto.aio.dtls_node.DtlsUdpClient`, possibly through a relay) → gateway → broker →
bridge → the same handlers as HTTP → reply on ``/mender/responses/{device id}/{request id}``.
Topics and envelopes: wire/envelope.py, docs/topics.md; this module: docs/device-transport.md.

- **Request ids cycle** through a small set (:class:`RequestIds`, default 8: ``"0"``..``"7"``).
  Every id is a response topic the gateway REGISTERs once in the node's session, and the
  gateway's per-session topic table is bounded (``GatewayConfig.max_topics_per_session``), so the
  node must not invent a new topic per request. Each new request carries a fresh ``serial``
  (envelope field ``n``) so the bridge's dedupe cache (keyed by id + envelope digest) never
  mistakes a reused id for a redelivery. An id whose request timed out stays quarantined until
  its late reply arrives or ``quarantine`` seconds pass, so a late reply is never taken for the
  answer to a later request on the same id.
- **Retries**: MQTT-SN QoS 1 retransmits each leg; on top, a call that gets no reply within
  ``timeout`` is re-sent ``attempts - 1`` times with the *same* envelope (same id and serial): the
  bridge answers a redelivery from its cache and never runs it twice.
- **Downloads** are block-wise: ``Range`` requests of ``block_size`` bytes; the bridge clamps
  each answer to its own ``--block-size`` and the node continues from the ``content-range`` it
  got, so any offset resumes. Chunk maps are fetched the same way.
- **Batches** (a root): :meth:`MqttSnDevice.send_batch` publishes sealed records on
  ``/mender/bulk/v1`` with a batch id from the same id set and returns the bulk reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_proto.device_api import (
    AUTH_PATH,
    CHUNK_MAP_PATH,
    INVENTORY_PATH,
    MESH_REPORT_CONTENT_TYPE,
    MESH_REPORT_PATH,
    NEXT_PATH,
    DeviceApiError,
    DeviceApiRefused,
    DeviceApiTimeout,
    DeviceApiTransportError,
    log_path,
    signed_auth_request,
    status_path,
)
from mqttsn import MessageReceived, MqttSnError
from wire.envelope import (
    BULK_TOPIC,
    RESPONSE_TOPIC_PREFIX,
    BulkReply,
    BulkRequest,
    EnvelopeError,
    RequestEnvelope,
    ResponseEnvelope,
    request_topic,
)
from wire.mesh_report import MAX_RECORD

__all__ = ["MqttSnClient", "MqttSnDevice", "RequestIds", "WireStats"]

log = logging.getLogger("meshota.device")

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class MqttSnClient(Protocol):
    """What :class:`MqttSnDevice` needs of UdpClient / DtlsUdpClient."""

    async def publish(
        self, topic: str | int, payload: bytes, qos: int = 0, retain: bool = False, *, short: bool = False
    ) -> int: ...

    async def subscribe(self, topic: str | int, qos: int = 0, *, short: bool = False) -> Any: ...

    @property
    def messages(self) -> AsyncIterator[MessageReceived]: ...


class RequestIds:
    """The small cycling set of request ids (sans-I/O: time comes in as ``now``).

    ``take(now)`` hands out the least recently used free id; ``release(id)`` after its answer;
    ``quarantine(id, now)`` after a timeout (free again at ``now + quarantine`` or when its late
    reply shows up, :meth:`late_reply`).
    """

    def __init__(self, size: int = 8, quarantine: float = 120.0) -> None:
        if not 1 <= size <= len(_ID_ALPHABET):
            raise ValueError(f"request id set size must be 1..{len(_ID_ALPHABET)}")
        self.ids = [_ID_ALPHABET[i] for i in range(size)]
        self.quarantine_for = quarantine
        self._free: list[str] = list(self.ids)
        self._busy: set[str] = set()
        self._quarantined: dict[str, float] = {}

    def take(self, now: float) -> str | None:
        for rid, until in list(self._quarantined.items()):
            if until <= now:
                del self._quarantined[rid]
                self._free.append(rid)
        if not self._free:
            return None
        rid = self._free.pop(0)
        self._busy.add(rid)
        return rid

    def release(self, rid: str) -> None:
        if rid in self._busy:
            self._busy.discard(rid)
            self._free.append(rid)

    def quarantine(self, rid: str, now: float) -> None:
        if rid in self._busy:
            self._busy.discard(rid)
            self._quarantined[rid] = now + self.quarantine_for

    def late_reply(self, rid: str) -> None:
        if self._quarantined.pop(rid, None) is not None:
            self._free.append(rid)

    def in_use(self, rid: str) -> bool:
        return rid in self._busy


@dataclass(slots=True)
class WireStats:
    """Application bytes this device put into / got out of MQTT-SN PUBLISH payloads."""

    requests: int = 0
    request_bytes: int = 0  # envelopes published (retries included)
    reply_bytes: int = 0
    batches: int = 0
    batch_bytes: int = 0
    retries: int = 0
    stale_replies: int = 0
    download_bytes: int = 0  # artifact / chunk-map bytes received


class MqttSnDevice:
    """One device's Mender session over an MQTT-SN client the caller owns and has connected.

    ``device_id`` is the node's MQTT-SN client id = the identity the gateway stamps (its PSK
    identity or certificate CN); the response topics are ``/mender/responses/{device_id}/#``.
    Use ``async with MqttSnDevice(...)`` or :meth:`start` / :meth:`aclose`.
    """

    def __init__(
        self,
        client: MqttSnClient,
        device_id: str,
        mac: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        *,
        request_ids: int = 8,
        timeout: float = 10.0,
        attempts: int = 3,
        block_size: int = 512,
        quarantine: float = 120.0,
        max_packet: int = 1100,
    ) -> None:
        self.client = client
        # the largest MQTT-SN packet the path carries: DtlsUdpClient(mtu=1200) less its record
        # overhead (a bigger write ends the DTLS session), under the gateway's 1,500 and the relay's 1,280
        self.max_packet = max_packet
        self.device_id = device_id
        self.mac = mac
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.token = ""
        self.timeout = timeout
        self.attempts = attempts
        self.block_size = block_size
        self.ids = RequestIds(request_ids, quarantine)
        self.stats = WireStats()
        self._serial = 0
        self._prefix = f"{RESPONSE_TOPIC_PREFIX}{device_id}/"
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._id_free = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._failure: DeviceApiError | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> MqttSnDevice:
        """Subscribe to the response topics and read replies (again after a lost session, once
        the client has reconnected)."""
        if self._reader is not None:
            await self.aclose()
        self._failure = None
        try:
            await self.client.subscribe(self._prefix + "#", qos=1)
        except MqttSnError as exc:
            raise DeviceApiTransportError(f"cannot subscribe to {self._prefix}#: {exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"replies-{self.device_id}")
        return self

    async def __aenter__(self) -> MqttSnDevice:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading replies (the MQTT-SN client stays the caller's)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        self._fail_pending(DeviceApiTransportError("device session closed"))

    async def _read(self) -> None:
        try:
            async for msg in self.client.messages:
                self._on_message(msg)
        except MqttSnError as exc:
            self._fail_pending(DeviceApiTransportError(f"MQTT-SN session lost: {exc}"))
            return
        self._fail_pending(DeviceApiTransportError("MQTT-SN session ended"))

    def _on_message(self, msg: MessageReceived) -> None:
        if msg.topic is None or not msg.topic.startswith(self._prefix):
            return
        rid = msg.topic[len(self._prefix) :]
        fut = self._pending.get(rid)
        if fut is None or fut.done():
            self.stats.stale_replies += 1
            self.ids.late_reply(rid)  # the answer a timed-out request was waiting for
            self._id_free.set()
            return
        self.stats.reply_bytes += len(msg.payload)
        fut.set_result(msg.payload)

    def _fail_pending(self, exc: DeviceApiError) -> None:
        self._failure = exc
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()

    # -- one exchange -----------------------------------------------------------------------------------

    async def _take_id(self) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            rid = self.ids.take(loop.time())
            if rid is not None:
                return rid
            self._id_free.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise DeviceApiTimeout(
                    f"no free request id within {self.timeout} s (all {len(self.ids.ids)} busy)"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._id_free.wait(), min(left, 1.0))

    async def _exchange(self, topic: str, make_payload: Any, what: str) -> bytes:
        """Publish ``make_payload(request id)`` on ``topic``; the raw reply payload."""
        if self._reader is None:
            raise DeviceApiTransportError("device session not started (use `async with` or start())")
        if self._failure is not None:
            raise self._failure
        loop = asyncio.get_running_loop()
        rid = await self._take_id()
        payload: bytes = make_payload(rid)
        fut: asyncio.Future[bytes] = loop.create_future()
        self._pending[rid] = fut
        try:
            for attempt in range(self.attempts):
                if attempt:
                    self.stats.retries += 1
                self.stats.request_bytes += len(payload)
                try:  # PUBACK comes from the gateway; the MQTT-SN session retransmits meanwhile
                    await asyncio.wait_for(self.client.publish(topic, payload, qos=1), self.timeout)
                except TimeoutError:
                    continue
                except MqttSnError as exc:
                    raise DeviceApiTransportError(f"{what}: publish refused: {exc}") from exc
                try:
                    reply = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                except TimeoutError:
                    continue
                self.ids.release(rid)
                return reply
            self.ids.quarantine(rid, loop.time())
            raise DeviceApiTimeout(f"{what}: no reply on {self._prefix}{rid} after {self.attempts} tries")
        except BaseException:
            if self.ids.in_use(rid):  # transport failure or cancellation: the id may still be answered
                self.ids.quarantine(rid, loop.time())
            raise
        finally:
            self._pending.pop(rid, None)
            self._id_free.set()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        query: Mapping[str, Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        with_token: bool = True,
    ) -> ResponseEnvelope:
        """One device-API call; any status is returned (typed errors only for no answer)."""
        self._serial += 1
        serial = self._serial

        def make(rid: str) -> bytes:
            env = RequestEnvelope(
                rid,
                method,
                self.token if with_token and self.token else None,
                content_type,
                body,
                {k: list(v) for k, v in (query or {}).items()},
                dict(headers or {}),
                serial,
            )
            return env.encode()

        self.stats.requests += 1
        raw = await self._exchange(request_topic(path), make, f"{method} {path}")
        try:
            return ResponseEnvelope.decode(raw)
        except EnvelopeError as exc:
            raise DeviceApiTransportError(f"{method} {path}: bad reply: {exc}") from exc

    async def send_batch(self, records: Sequence[bytes]) -> BulkReply:
        """A root's batch of sealed records on the bulk topic; the bridge's bulk reply."""
        payloads: dict[str, bytes] = {}

        def make(rid: str) -> bytes:
            payloads[rid] = BulkRequest(rid, list(records)).encode()
            self.stats.batch_bytes += len(payloads[rid])
            return payloads[rid]

        self.stats.batches += 1
        raw = await self._exchange(BULK_TOPIC, make, f"batch of {len(records)}")
        try:
            return BulkReply.decode(raw)
        except EnvelopeError as exc:
            raise DeviceApiTransportError(f"bad bulk reply: {exc}") from exc

    # -- the device API -------------------------------------------------------------------------------

    async def authenticate(self) -> int:
        body, signature = signed_auth_request(self.key, self.mac)
        r = await self.request(
            "POST",
            AUTH_PATH,
            body=body,
            content_type="application/json",
            headers={"x-men-signature": signature},
            with_token=False,
        )
        if r.status == 200:
            self.token = r.body.decode("ascii")
        return r.status

    async def _json_call(self, method: str, path: str, doc: object) -> int:
        body = json.dumps(doc, separators=(",", ":")).encode()
        return (await self.request(method, path, body=body, content_type="application/json")).status

    async def put_inventory(self, attributes: Sequence[Mapping[str, Any]]) -> int:
        return await self._json_call("PUT", INVENTORY_PATH, list(attributes))

    async def patch_inventory(self, attributes: Sequence[Mapping[str, Any]]) -> int:
        return await self._json_call("PATCH", INVENTORY_PATH, list(attributes))

    async def next_deployment(self, artifact_name: str, device_type: str) -> dict[str, Any] | None:
        r = await self.request(
            "GET", NEXT_PATH, query={"artifact_name": [artifact_name], "device_type": [device_type]}
        )
        if r.status == 204:
            return None
        if r.status != 200:
            raise DeviceApiRefused("next deployment", r.status, r.body)
        try:
            found = json.loads(r.body)
        except ValueError as exc:
            raise DeviceApiTransportError(f"next deployment: body is not JSON: {exc}") from exc
        if not isinstance(found, dict):
            raise DeviceApiTransportError("next deployment: body is not a JSON object")
        return found

    async def put_status(self, deployment_id: str, status: str, substate: str | None = None) -> int:
        body = {"status": status} if substate is None else {"status": status, "substate": substate}
        return await self._json_call("PUT", status_path(deployment_id), body)

    async def put_log(self, deployment_id: str, messages: Sequence[Mapping[str, str]]) -> int:
        return await self._json_call("PUT", log_path(deployment_id), {"messages": list(messages)})

    async def mesh_report(self, record: bytes) -> int:
        r = await self.request("POST", MESH_REPORT_PATH, body=record, content_type=MESH_REPORT_CONTENT_TYPE)
        return r.status

    def mesh_report_room(self) -> int:
        """What fits in one PUBLISH of ``max_packet`` bytes: the envelope with this session's
        token, the body's key and 3-byte bin header, 9 bytes of PUBLISH header (long length form)."""
        probe = RequestEnvelope(
            "0" * 2, "POST", self.token or None, MESH_REPORT_CONTENT_TYPE, b"", {}, {}, 2**32
        ).encode()
        return max(0, min(MAX_RECORD, self.max_packet - len(probe) - 5 - 9))

    async def _ranged(
        self, path: str, query: Mapping[str, Sequence[str]], offset: int, length: int
    ) -> tuple[bytes, int]:
        """One block: (bytes, total size)."""
        end = offset + min(length, self.block_size) - 1
        r = await self.request("GET", path, query=query, headers={"range": f"bytes={offset}-{end}"})
        if r.status != 206:
            raise DeviceApiRefused(f"GET {path} bytes={offset}-{end}", r.status, r.body)
        m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
        if m is None or int(m.group(1)) != offset or len(r.body) != int(m.group(2)) - offset + 1:
            raise DeviceApiTransportError(f"GET {path}: bad content-range {r.headers.get('content-range')!r}")
        self.stats.download_bytes += len(r.body)
        return r.body, int(m.group(3))

    async def _read_all(
        self, path: str, query: Mapping[str, Sequence[str]], offset: int = 0, length: int | None = None
    ) -> bytes:
        parts: list[bytes] = []
        total = None
        while True:
            want = self.block_size if length is None else length - sum(map(len, parts))
            if want <= 0 or (total is not None and offset >= total):
                return b"".join(parts)
            data, total = await self._ranged(path, query, offset, want)
            if not data:
                return b"".join(parts)
            parts.append(data)
            offset += len(data)

    @staticmethod
    def _split_link(uri: str) -> tuple[str, dict[str, list[str]]]:
        link = urlsplit(uri)
        return link.path, parse_qs(link.query, keep_blank_values=True)

    async def fetch_range(self, uri: str, offset: int, length: int) -> bytes:
        path, query = self._split_link(uri)
        return await self._read_all(path, query, offset, length)

    async def fetch_artifact(self, uri: str) -> bytes:
        path, query = self._split_link(uri)
        return await self._read_all(path, query)

    async def fetch_map(self, artifact_id: str, chunk_size: int) -> bytes:
        return await self._read_all(CHUNK_MAP_PATH.format(id=artifact_id), {"chunk_size": [str(chunk_size)]})
