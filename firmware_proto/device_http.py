"""asyncio drivers that connect the group cores to the Mender device API over HTTP (httpx).

This is the interim end-to-end session: the MQTT-SN/sealed-record path (issue 6) replaces the
HTTP calls with the same requests over the bridge. :class:`HttpDevice` is one device's session
(auth, next, status, ranged download, chunk map); :class:`RootRunner` and :class:`NodeRunner`
carry out the actions of a :class:`GroupStreamRoot` / :class:`UpdateAgent` with it. The root
fetches the artifact block-wise (``Range`` requests of ``block_size``), once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import boot as bootmod
from .flash_store import FlashStore
from .group_stream import FetchArtifact, GroupStreamRoot
from .group_udp import GroupUdpEndpoint
from .update_agent import AgentConfig, FetchMap, FetchRange, Reboot, ReportStatus, UpdateAgent

__all__ = ["HttpDevice", "NodeRunner", "RootRunner"]

CHUNK_MAP_URL = "/api/meshota/v1/devices/chunk_maps/{id}"
NEXT_URL = "/api/devices/v1/deployments/device/deployments/next"


class HttpDevice:
    def __init__(self, base_url: str, mac: str, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.base_url = base_url
        self.mac = mac
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.token = ""
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def authenticate(self) -> int:
        pub = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        id_data = json.dumps({"mac": self.mac}, separators=(",", ":"))
        body = (json.dumps({"id_data": id_data, "tenant_token": "", "pubkey": pub.decode()}) + "\n").encode()
        sig = base64.b64encode(self.key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
        r = await self.http.post(
            "/api/devices/v1/authentication/auth_requests",
            content=body,
            headers={"X-MEN-Signature": sig, "Content-Type": "application/json"},
        )
        if r.status_code == 200:
            self.token = r.text
        return r.status_code

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def next_deployment(self, artifact_name: str, device_type: str) -> dict[str, Any] | None:
        r = await self.http.get(
            NEXT_URL,
            params={"artifact_name": artifact_name, "device_type": device_type},
            headers=self._auth(),
        )
        r.raise_for_status()
        return r.json() if r.status_code == 200 else None

    async def put_status(self, deployment_id: str, status: str) -> int:
        r = await self.http.put(
            f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status",
            json={"status": status},
            headers=self._auth(),
        )
        return r.status_code

    async def fetch_range(self, uri: str, offset: int, length: int) -> bytes:
        r = await self.http.get(uri, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        if r.status_code != 206:
            raise httpx.HTTPStatusError(
                f"range request answered {r.status_code}", request=r.request, response=r
            )
        return r.content

    async def fetch_map(self, artifact_id: str, chunk_size: int) -> bytes:
        r = await self.http.get(
            CHUNK_MAP_URL.format(id=artifact_id), params={"chunk_size": chunk_size}, headers=self._auth()
        )
        r.raise_for_status()
        return r.content

    async def fetch_artifact(self, uri: str, block_size: int = 16384) -> bytes:
        """Block-wise download (the shape MQTT block transfer will have): Range after Range."""
        first = await self.http.get(uri, headers={"Range": f"bytes=0-{block_size - 1}"})
        if first.status_code != 206:
            raise httpx.HTTPStatusError(
                f"range request answered {first.status_code}", request=first.request, response=first
            )
        total = int(first.headers["content-range"].rsplit("/", 1)[1])
        parts = [first.content]
        offset = len(first.content)
        while offset < total:
            parts.append(await self.fetch_range(uri, offset, min(block_size, total - offset)))
            offset += len(parts[-1])
        return b"".join(parts)

    async def aclose(self) -> None:
        await self.http.aclose()


class RootRunner:
    """A root: its own device session fetches each artifact once; the core streams it."""

    def __init__(self, core: GroupStreamRoot, endpoint: GroupUdpEndpoint, device: HttpDevice) -> None:
        self.core = core
        self.endpoint = endpoint
        self.device = device
        self.tasks: set[asyncio.Task[None]] = set()
        endpoint.attach(core, self._collect)

    def _collect(self) -> None:
        for action in self.core.actions():
            if isinstance(action, FetchArtifact):
                task = asyncio.get_running_loop().create_task(self._fetch(action))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _fetch(self, action: FetchArtifact) -> None:
        loop = asyncio.get_running_loop()
        try:
            artifact = await self.device.fetch_artifact(action.uri)
            cmap = await self.device.fetch_map(action.artifact_id, action.chunk_size)
        except httpx.HTTPError:
            self.core.fetch_failed(action.artifact_id, loop.time())
        else:
            self.core.artifact_fetched(action.artifact_id, artifact, cmap, loop.time())
        self.endpoint.kick()


class NodeRunner:
    """One node: update agent on the group link, its own session for next/status/fallback."""

    def __init__(
        self,
        flash: FlashStore,
        endpoint: GroupUdpEndpoint,
        device: HttpDevice,
        config: AgentConfig,
        rng: random.Random,
        image_ok: Callable[[bytes], bool],
    ) -> None:
        self.flash = flash
        self.endpoint = endpoint
        self.device = device
        self.config = config
        self.rng = rng
        self.image_ok = image_ok
        self.reboots = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.agent = self._boot()

    def _boot(self) -> UpdateAgent:
        booted = bootmod.boot(self.flash, self.image_ok)
        agent = UpdateAgent(self.flash, self.endpoint, self.config, self.rng, booted)
        self.agent = agent
        agent.start(asyncio.get_running_loop().time())
        self.endpoint.attach(agent, self._collect)
        return agent

    @property
    def running_artifact(self) -> str:
        return self.agent.running_artifact

    async def check_for_update(self, device_type: str) -> None:
        found = await self.device.next_deployment(self.running_artifact, device_type)
        if found is not None:
            art = found["artifact"]
            self.agent.deployment_learned(
                found["id"],
                art["id"],
                art["artifact_name"],
                art["source"]["uri"],
                asyncio.get_running_loop().time(),
            )
            self.endpoint.kick()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _collect(self) -> None:
        for action in self.agent.actions():
            if isinstance(action, ReportStatus):
                self._spawn(self._report(self.agent, action))
            elif isinstance(action, FetchRange):
                self._spawn(self._range(action))
            elif isinstance(action, FetchMap):
                self._spawn(self._map(action))
            elif isinstance(action, Reboot):
                self.reboots += 1
                asyncio.get_running_loop().call_soon(self._boot)
                return

    async def _report(self, agent: UpdateAgent, action: ReportStatus) -> None:
        if await self.device.put_status(action.deployment_id, action.status) == 204:
            agent.status_delivered(action.deployment_id, action.status)

    async def _range(self, action: FetchRange) -> None:
        try:
            data = await self.device.fetch_range(action.uri, action.offset, action.length)
        except httpx.HTTPError:
            self.agent.fetch_failed(asyncio.get_running_loop().time())
        else:
            self.agent.range_fetched(action.offset, data, asyncio.get_running_loop().time())
        self.endpoint.kick()

    async def _map(self, action: FetchMap) -> None:
        try:
            data = await self.device.fetch_map(action.artifact_id, action.chunk_size)
        except httpx.HTTPError:
            self.agent.fetch_failed(asyncio.get_running_loop().time())
        else:
            self.agent.map_fetched(data, asyncio.get_running_loop().time())
        self.endpoint.kick()
