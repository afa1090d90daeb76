"""The Mender device API over HTTP (httpx): :class:`HttpDevice`, one :class:`DeviceApi` session.

The same calls travel over MQTT-SN with :class:`~firmware_proto.aio.device_mqttsn.MqttSnDevice`;
the group drivers (:class:`RootRunner`, :class:`NodeRunner`, re-exported here) live in
``firmware_proto.aio.group_runners`` and take either. Transport failures surface as
:class:`~firmware_proto.device_api.DeviceApiError` subclasses, never as httpx exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_proto.aio.group_runners import NodeRunner, RootRunner
from firmware_proto.device_api import (
    AUTH_PATH,
    CHUNK_MAP_PATH,
    INVENTORY_PATH,
    MESH_REPORT_CONTENT_TYPE,
    MESH_REPORT_PATH,
    NEXT_PATH,
    DeviceApiRefused,
    DeviceApiTimeout,
    DeviceApiTransportError,
    log_path,
    signed_auth_request,
    status_path,
)
from wire.mesh_report import MAX_RECORD

__all__ = [
    "CHUNK_MAP_URL",
    "NEXT_URL",
    "HttpDevice",
    "NodeRunner",
    "RootRunner",
]

CHUNK_MAP_URL = CHUNK_MAP_PATH
NEXT_URL = NEXT_PATH


class HttpDevice:
    def __init__(
        self,
        base_url: str,
        mac: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        *,
        block_size: int = 16384,
    ) -> None:
        self.base_url = base_url
        self.mac = mac
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.token = ""
        self.block_size = block_size
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise DeviceApiTimeout(f"{method} {url}: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise DeviceApiTransportError(f"{method} {url}: {exc!r}") from exc

    async def authenticate(self) -> int:
        body, sig = signed_auth_request(self.key, self.mac)
        r = await self._send(
            "POST",
            AUTH_PATH,
            content=body,
            headers={"X-MEN-Signature": sig, "Content-Type": "application/json"},
        )
        if r.status_code == 200:
            self.token = r.text
        return r.status_code

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _json(self, method: str, path: str, doc: object) -> int:
        body = json.dumps(doc, separators=(",", ":")).encode()
        r = await self._send(
            method, path, content=body, headers={**self._auth(), "Content-Type": "application/json"}
        )
        return r.status_code

    async def put_inventory(self, attributes: Sequence[Mapping[str, Any]]) -> int:
        return await self._json("PUT", INVENTORY_PATH, list(attributes))

    async def patch_inventory(self, attributes: Sequence[Mapping[str, Any]]) -> int:
        return await self._json("PATCH", INVENTORY_PATH, list(attributes))

    async def next_deployment(self, artifact_name: str, device_type: str) -> dict[str, Any] | None:
        r = await self._send(
            "GET",
            NEXT_URL,
            params={"artifact_name": artifact_name, "device_type": device_type},
            headers=self._auth(),
        )
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            raise DeviceApiRefused("next deployment", r.status_code, r.content)
        found: dict[str, Any] = r.json()
        return found

    async def put_status(self, deployment_id: str, status: str, substate: str | None = None) -> int:
        body = {"status": status} if substate is None else {"status": status, "substate": substate}
        return await self._json("PUT", status_path(deployment_id), body)

    async def put_log(self, deployment_id: str, messages: Sequence[Mapping[str, str]]) -> int:
        return await self._json("PUT", log_path(deployment_id), {"messages": list(messages)})

    async def mesh_report(self, record: bytes) -> int:
        r = await self._send(
            "POST",
            MESH_REPORT_PATH,
            content=record,
            headers={**self._auth(), "Content-Type": MESH_REPORT_CONTENT_TYPE},
        )
        return r.status_code

    def mesh_report_room(self) -> int:
        return MAX_RECORD

    async def _range(self, uri: str, offset: int, length: int) -> tuple[bytes, int]:
        r = await self._send("GET", uri, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        if r.status_code != 206:
            raise DeviceApiRefused(f"range request {offset}+{length}", r.status_code, r.content)
        return r.content, int(r.headers["content-range"].rsplit("/", 1)[1])

    async def fetch_range(self, uri: str, offset: int, length: int) -> bytes:
        return (await self._range(uri, offset, length))[0]

    async def fetch_map(self, artifact_id: str, chunk_size: int) -> bytes:
        r = await self._send(
            "GET",
            CHUNK_MAP_URL.format(id=artifact_id),
            params={"chunk_size": chunk_size},
            headers=self._auth(),
        )
        if r.status_code != 200:
            raise DeviceApiRefused("chunk map", r.status_code, r.content)
        return r.content

    async def fetch_artifact(self, uri: str, block_size: int | None = None) -> bytes:
        """Block-wise download: Range after Range of ``block_size`` bytes."""
        size = block_size or self.block_size
        first, total = await self._range(uri, 0, size)
        parts = [first]
        offset = len(first)
        while offset < total:
            parts.append(await self.fetch_range(uri, offset, min(size, total - offset)))
            offset += len(parts[-1])
        return b"".join(parts)

    async def aclose(self) -> None:
        await self.http.aclose()
