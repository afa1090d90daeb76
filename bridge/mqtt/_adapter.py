"""MQTT adapter, transport-free half: (topic, envelope, stamped identity) -> routing table -> reply.

The very same :class:`bridge.api.Router` as the HTTP adapter; no handler knows which adapter
called it. The device id comes only from the identity the gateway stamped on the PUBLISH (MQTT 5
user property), never from the topic or the payload. The organisation comes from the topic
(``/mender/t/{organisation}/...``, else the default one; wire/tenant_topics.py), which only
credentials of that organisation (or the installation's gateway) may publish on: the request
carries it as ``transport_tenant`` and a device token or auth request of another organisation is
refused (403) before anything is read or written; the reply goes to that organisation's topic.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from bridge.api import Request, Response, Router, block_range, error_response
from wire.envelope import (
    EnvelopeError,
    RequestEnvelope,
    ResponseEnvelope,
    api_path_of,
    check_request_id,
    response_topic,
)
from wire.tenant_topics import DEFAULT_TENANT, TENANT_TOPIC_PREFIX

__all__ = ["BridgePolicy", "MqttApiAdapter", "Reply", "StampedIdentity"]

log = logging.getLogger("meshota.bridge")

# answered block-wise: artifact downloads and (meshota extension) signed chunk maps
_DOWNLOAD = re.compile(
    r"^(/api/devices/v1/deployments/download/artifacts/[^/]+|/api/meshota/v1/devices/chunk_maps/[^/]+)$"
)
# the device API (Mender's and meshota's device-side extension); the management API stays on HTTP
_DEVICE_PREFIXES = ("/api/devices/", "/api/meshota/v1/devices/")
_AUTH_PATH = "/api/devices/v1/authentication/auth_requests"
# request headers a node may send besides the token and content type
_PASSED_HEADERS = frozenset({"x-men-signature", "range"})
# response headers that carry nothing over MQTT (the request id is in the topic already)
_DROPPED_HEADERS = frozenset({"x-men-requestid", "content-length"})


@dataclass(frozen=True, slots=True)
class BridgePolicy:
    """What the MQTT adapter accepts.

    ``require_verified``: refuse (403) requests whose stamped identity is only the MQTT-SN client
    id (plain UDP, no DTLS). ``meshota server`` turns it on unless ``--accept-unverified``.
    ``block_size``: the most artifact bytes one reply carries; downloads are always answered as
    206 ranges of at most this many bytes, so a reply fits one MQTT-SN datagram.
    ``device_api_only``: the management API stays on HTTP.
    """

    require_verified: bool = True
    block_size: int = 512
    device_api_only: bool = True
    base_url: str = ""  # put into artifact links when Settings.public_url is empty


@dataclass(frozen=True, slots=True)
class StampedIdentity:
    device: str
    verified: bool
    tenant: str = DEFAULT_TENANT  # the organisation of the topic it came on

    @property
    def key(self) -> str:
        """The device, qualified by its organisation (dedupe and request-log keys): the same
        identity in two organisations is two devices."""
        return self.device if self.tenant == DEFAULT_TENANT else f"{self.tenant}/{self.device}"

    def reply_topic(self, request_id: str) -> str:
        """``/mender/responses/{device}/{request}``, under ``/mender/t/{organisation}/`` for an
        organisation other than the default one (wire/tenant_topics.py)."""
        if self.tenant == DEFAULT_TENANT:
            return response_topic(self.device, request_id)
        return f"{TENANT_TOPIC_PREFIX}{self.tenant}/responses/{self.device}/{request_id}"


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    payload: bytes
    request_id: str
    status: int


TokenBinder = Callable[[str, str], Awaitable[None]]


class MqttApiAdapter:
    def __init__(
        self, router: Router[Any], policy: BridgePolicy, *, bind_token: TokenBinder | None = None
    ) -> None:
        self.router = router
        self.policy = policy
        self.bind_token = bind_token

    def request_id_of(self, payload: bytes) -> str | None:
        """The request id of a (possibly bad) envelope, when one can be found."""
        try:
            obj = msgpack.unpackb(payload, raw=False)
            return check_request_id(obj.get("i")) if isinstance(obj, dict) else None
        except (ValueError, TypeError, msgpack.UnpackException, EnvelopeError):
            return None

    async def handle(self, topic: str, payload: bytes, who: StampedIdentity) -> Reply | None:
        """The reply to publish, or None when nobody can be answered (no request id).
        ``topic``: the node-visible topic (its organisation is ``who.tenant``)."""
        path = api_path_of(topic)
        try:
            env = RequestEnvelope.decode(payload)
        except EnvelopeError as exc:
            rid = exc.request_id
            if rid is None:
                log.warning("dropped request from %s on %s: %s", who.device, topic, exc)
                return None
            return self._error(who, rid, 400, f"bad request envelope: {exc}")
        if path is None:
            return self._error(who, env.request_id, 404, f"not an API topic: {topic}")
        if self.policy.require_verified and not who.verified:
            return self._error(who, env.request_id, 403, "transport identity is not verified (DTLS required)")
        if self.policy.device_api_only and not path.startswith(_DEVICE_PREFIXES):
            return self._error(who, env.request_id, 403, "only the device API is served over MQTT")
        request = self.build_request(path, env, who)
        response = await self.router.handle(request)
        if (
            self.bind_token is not None
            and response.status == 200
            and path == _AUTH_PATH
            and env.method == "POST"
            and (who.verified or not self.policy.require_verified)
        ):
            await self.bind_token(who.device, response.body.decode("ascii", "replace"))
        body = await read_body(response)
        return Reply(
            who.reply_topic(env.request_id),
            encode_response(response, body),
            env.request_id,
            response.status,
        )

    def build_request(self, path: str, env: RequestEnvelope, who: StampedIdentity) -> Request:
        headers = {k: v for k, v in env.headers.items() if k in _PASSED_HEADERS}
        if env.token:
            headers["authorization"] = f"Bearer {env.token}"
        if env.content_type:
            headers["content-type"] = env.content_type
        request = Request(
            method=env.method,
            path=path,
            query=env.query,
            headers=headers,
            body=env.body,
            # the gateway-stamped identity: auth_requests binds the device (and the token's
            # meshota.tid claim) to it, every token-checked handler compares it with that claim
            # (docs/mqtt_bridge.md, "Token binding"); unverified stamps got here only when allowed
            identity=who.device,
            transport_tenant=who.tenant,
            base_url=self.policy.base_url,
            request_id=env.request_id,
        )
        if env.method == "GET" and _DOWNLOAD.match(path):
            request = replace(request, headers={**headers, "range": self._block_range(headers.get("range"))})
        return request

    def _block_range(self, spec: str | None) -> str:
        """Clamp a download to one block: no range -> the first block; a long range -> its first block."""
        return block_range(spec, self.policy.block_size)

    def _error(self, who: StampedIdentity, rid: str, status: int, message: str) -> Reply:
        log.info("refused request %s from %s: %d %s", rid, who.device, status, message)
        response = error_response(status, message, rid)
        return Reply(who.reply_topic(rid), encode_response(response, response.body), rid, status)


async def read_body(response: Response) -> bytes:
    if response.file is None:
        return response.body
    file = response.file

    def read() -> bytes:
        with file.path.open("rb") as fh:
            fh.seek(file.offset)
            return fh.read(file.length)

    return await asyncio.to_thread(read)


def encode_response(response: Response, body: bytes) -> bytes:
    headers = {k.lower(): v for k, v in response.headers if k.lower() not in _DROPPED_HEADERS}
    return ResponseEnvelope(response.status, headers, body).encode()
