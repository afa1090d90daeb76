"""Integration: real server (HTTP), real mender-artifact signed artifact, 1 root + 10 nodes over UDP
multicast on loopback. All 10 must report ``success`` in the management API, and the artifact
must have been downloaded exactly once (by the root, block-wise), nothing by the nodes.

The device API calls (auth, next, status, chunk map, downloads) go over HTTP: the MQTT-SN/sealed
path of issue 6 is not wired to the agent yet.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bridge.api import create_user
from bridge.api._chunk_maps import deployment_key
from bridge.artifacts import load_verify_key
from bridge.http import BackgroundServer, ServerConfig
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from firmware_proto.aio.device_http import HttpDevice, NodeRunner, RootRunner
from firmware_proto.aio.group_udp import GroupUdpEndpoint
from firmware_proto.group_stream import GroupStreamRoot, RootConfig
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import install_initial_image
from firmware_proto.update_agent import AgentConfig
from tests.support.broker import free_port
from tests.support.update import make_signed_artifact
from wire.image_verify import mender_image_verifier

ADMIN = ("admin@example.com", "secret123")
NODES = 10


def _download_counter(counted: list[tuple[str, str | None]]) -> Any:
    def middleware(app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and "/download/artifacts/" in scope["path"]:
                headers = dict(scope["headers"])
                rng = headers.get(b"range")
                counted.append((scope["path"], rng.decode() if rng else None))
            await app(scope, receive, send)

        return wrapped

    return middleware


@pytest.mark.integration
def test_one_root_ten_nodes_over_udp_multicast(tmp_path: Path) -> None:
    vendor = ec.generate_private_key(ec.SECP256R1())
    vendor_pem = tmp_path / "vendor.pem"
    vendor_pem.write_bytes(
        vendor.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    v1 = make_signed_artifact(tmp_path, "v1", vendor_pem)
    v2_path = tmp_path / "v2.mender"
    v2_path.write_bytes(make_signed_artifact(tmp_path, "v2", vendor_pem, payload_size=40000))
    public = vendor.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    image_ok = mender_image_verifier([load_verify_key(public)])
    downloads: list[tuple[str, str | None]] = []
    server = BackgroundServer(
        ServerConfig(
            db_url=f"sqlite:///{tmp_path / 'db.sqlite'}", artifacts_dir=tmp_path / "artifacts", port=0
        ),
        middleware=_download_counter(downloads),
    ).start()
    try:

        async def add_admin() -> Any:
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
                async with server.context.store.transaction() as conn:
                    await create_user(conn, *ADMIN)
            return (await deployment_key(server.context)).public_key()

        map_key = server.run_coroutine(add_admin())
        token = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
        mgmt = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        files = {"artifact": ("v2.mender", v2_path.read_bytes(), "application/octet-stream")}
        assert mgmt.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        asyncio.run(_scenario(server.url, mgmt, map_key, image_ok, v1, len(v2_path.read_bytes()), downloads))
        mgmt.close()
    finally:
        server.stop()


async def _scenario(
    url: str,
    mgmt: httpx.Client,
    map_key: Any,
    image_ok: Any,
    v1: bytes,
    v2_size: int,
    downloads: list[tuple[str, str | None]],
) -> None:
    devices = [HttpDevice(url, f"02:00:00:00:00:{i:02x}") for i in range(NODES + 1)]
    for d in devices:
        assert await d.authenticate() == 401
    for dev in mgmt.get("/api/management/v2/devauth/devices", params={"per_page": 100}).json():
        aid = dev["auth_sets"][-1]["id"]
        mgmt.put(
            f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status", json={"status": "accepted"}
        )
    ids = {}
    for d in devices:
        assert await d.authenticate() == 200
    listing = mgmt.get("/api/management/v2/devauth/devices", params={"per_page": 100}).json()
    for dev in listing:
        ids[dev["identity_data"]["mac"]] = dev["id"]
    node_ids = [ids[d.mac] for d in devices[1:]]
    r = mgmt.post(
        "/api/management/v1/deployments/deployments",
        json={"name": "group", "artifact_name": "v2", "devices": node_ids},
    )
    assert r.status_code == 201, r.text
    deployment_id = r.headers["location"].rsplit("/", 1)[1]

    group = ("239.255.77.7", free_port(2))
    root_ep = await GroupUdpEndpoint(group).open()
    root = RootRunner(
        GroupStreamRoot(
            root_ep,
            RootConfig(collection_window=1.0, chunk_size=1024, frame_interval=0.0005, reply_window_ms=200),
        ),
        root_ep,
        devices[0],
    )
    config = AgentConfig(map_key=map_key, image_ok=image_ok, fallback_timeout=30.0, want_interval=0.5)
    nodes = []
    for i, device in enumerate(devices[1:]):
        flash = MemoryFlash(128 * 1024)
        install_initial_image(flash, v1, "v1")
        ep = await GroupUdpEndpoint(group).open()
        nodes.append(NodeRunner(flash, ep, device, config, random.Random(i), image_ok))
    for node in nodes:
        await node.check_for_update("test-device")

    async def finished() -> None:
        while True:
            stats = mgmt.get(f"/api/management/v1/deployments/deployments/{deployment_id}/statistics").json()
            if stats["success"] + stats["failure"] == NODES:
                return
            await asyncio.sleep(0.2)

    await asyncio.wait_for(finished(), timeout=90)
    stats = mgmt.get(f"/api/management/v1/deployments/deployments/{deployment_id}/statistics").json()
    assert stats["success"] == NODES, stats
    assert all(n.running_artifact == "v2" and n.reboots == 1 for n in nodes)
    assert root.core.fetches == 1
    # every artifact byte was downloaded once, by the root's block-wise Range requests
    spans = []
    for _, rng in downloads:
        assert rng is not None
        start, end = rng.removeprefix("bytes=").split("-")
        spans.append((int(start), int(end)))
    assert sum(e - s + 1 for s, e in spans) == v2_size
    assert root_ep.bytes_sent < 1.3 * v2_size
    for n in nodes:
        n.endpoint.close()
        await n.device.aclose()
    root_ep.close()
    await devices[0].aclose()
