"""Issue 7 over the real stack: 1 root + 10 nodes, every device API call over MQTT-SN (DTLS PSK,
through a relay) → real gateway → real mosquitto (ACL) → real bridge + server. One
mender-artifact-signed artifact; the root fetches it once, block-wise, and streams it over UDP
multicast on loopback. Nodes learn the deployment with their own ``next``; their statuses travel
as sealed records that the root batches onto ``/mender/bulk/v1`` without being able to read them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bridge.api._chunk_maps import deployment_key
from bridge.artifacts import load_verify_key
from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.group_runners import NodeRunner, RootRunner
from firmware_proto.aio.group_udp import GroupUdpEndpoint
from firmware_proto.aio.sealed_uplink_udp import RecordCollectorUdp, SealedUplinkUdp
from firmware_proto.dtls_client import PskClientConfig
from firmware_proto.group_stream import GroupStreamRoot, RootConfig
from firmware_proto.sealed_uplink import RecordBatcher, SealedRecordSender
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import install_initial_image
from firmware_proto.update_agent import AgentConfig
from tests.support.broker import free_port
from tests.support.mqtt_stack import ServerSide, gateway_side, server_side
from tests.support.update import make_signed_artifact
from wire.envelope import RequestEnvelope
from wire.image_verify import mender_image_verifier
from wire.sealed import derive_record_key

NODES = 10
ROOT_ID = "root-0"
NODE_IDS = [f"node-{i:02d}" for i in range(1, NODES + 1)]
PSKS = {name: bytes([i + 1]) * 16 for i, name in enumerate([ROOT_ID, *NODE_IDS])}
BLOCK = 512


@pytest.mark.integration
def test_one_root_ten_nodes_over_mqttsn_with_sealed_statuses(tmp_path: Path) -> None:
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
    v2 = make_signed_artifact(tmp_path, "v2", vendor_pem, payload_size=20000)
    public = vendor.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    image_ok = mender_image_verifier([load_verify_key(public)])
    with server_side(tmp_path, PSKS, block_size=BLOCK) as side:

        async def key() -> Any:
            return (await deployment_key(side.server.context)).public_key()

        map_key = side.server.run_coroutine(key())
        files = {"artifact": ("v2.mender", v2, "application/octet-stream")}
        assert side.mgmt.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        asyncio.run(_scenario(side, map_key, image_ok, v1, v2))


async def _scenario(side: ServerSide, map_key: Any, image_ok: Any, v1: bytes, v2: bytes) -> None:
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(gateway_side(side, PSKS))
        devices: dict[str, MqttSnDevice] = {}
        for i, name in enumerate([ROOT_ID, *NODE_IDS]):
            client = DtlsUdpClient(
                gw.relay_address, name, dtls=PskClientConfig(name, PSKS[name]), retry_interval=1.0
            )
            await stack.enter_async_context(client)
            device = MqttSnDevice(client, name, f"02:00:00:00:bb:{i:02x}", block_size=BLOCK, timeout=10)
            devices[name] = await stack.enter_async_context(device)
        assert await asyncio.gather(*(d.authenticate() for d in devices.values())) == [401] * (NODES + 1)
        await asyncio.to_thread(side.accept_pending)
        # authenticating over its own verified session also binds the token used for sealed records
        assert await asyncio.gather(*(d.authenticate() for d in devices.values())) == [200] * (NODES + 1)
        ids = side.mender_ids()
        node_ids = [ids[devices[n].mac] for n in NODE_IDS]
        r = side.mgmt.post(
            "/api/management/v1/deployments/deployments",
            json={"name": "group", "artifact_name": "v2", "devices": node_ids},
        )
        assert r.status_code == 201, r.text
        deployment = r.headers["location"].rsplit("/", 1)[1]
        seen_before = len(side.seen)

        root_dev = devices[ROOT_ID]

        async def send_batch(records: Sequence[bytes]) -> Sequence[bytes | int]:
            return (await root_dev.send_batch(records)).entries

        collector = await RecordCollectorUdp(RecordBatcher(window=0.3), send_batch).open()
        stack.callback(collector.close)
        group = ("239.255.77.8", free_port(2))
        root_ep = await GroupUdpEndpoint(group).open()
        stack.callback(root_ep.close)
        root = RootRunner(
            GroupStreamRoot(
                root_ep,
                RootConfig(
                    collection_window=1.0, chunk_size=1024, frame_interval=0.0005, reply_window_ms=200
                ),
            ),
            root_ep,
            root_dev,
        )
        config = AgentConfig(map_key=map_key, image_ok=image_ok, fallback_timeout=30.0, want_interval=0.5)
        nodes: list[NodeRunner] = []
        for i, name in enumerate(NODE_IDS):
            flash = MemoryFlash(128 * 1024)
            install_initial_image(flash, v1, "v1")
            ep = await GroupUdpEndpoint(group).open()
            stack.callback(ep.close)
            sender = SealedRecordSender(derive_record_key(name, PSKS[name]), flash)
            uplink = await SealedUplinkUdp(sender, collector.address, timeout=5.0).open()
            stack.callback(uplink.close)
            nodes.append(
                NodeRunner(flash, ep, devices[name], config, random.Random(i), image_ok, uplink=uplink)
            )
        # each node learns the deployment with its own `next` over its own end-to-end session
        assert await asyncio.gather(*(n.check_for_update("test-device") for n in nodes)) == [True] * NODES

        async def finished() -> None:
            while True:
                stats = side.mgmt.get(f"/api/management/v1/deployments/deployments/{deployment}/statistics")
                body = stats.json()
                if body["success"] + body["failure"] == NODES and all(
                    n.agent.pending_report() is None for n in nodes
                ):
                    return
                await asyncio.sleep(0.2)

        await asyncio.wait_for(finished(), timeout=90)
        stats = side.mgmt.get(f"/api/management/v1/deployments/deployments/{deployment}/statistics").json()
        assert stats["success"] == NODES, stats
        listing = side.mgmt.get(f"/api/management/v1/deployments/deployments/{deployment}/devices").json()
        assert sorted(d["status"] for d in listing) == ["success"] * NODES
        assert all(n.running_artifact == "v2" and n.reboots == 1 for n in nodes)

        # the root fetched the artifact once, block-wise over MQTT-SN; nodes downloaded nothing
        assert root.core.fetches == 1
        spans = []
        for _, path, rng, _ in side.seen[seen_before:]:
            if "/download/artifacts/" in path:
                assert rng is not None
                start, end = rng.removeprefix("bytes=").split("-")
                spans.append((int(start), int(end)))
        assert sum(e - s + 1 for s, e in spans) == len(v2) and max(e - s + 1 for s, e in spans) <= BLOCK
        assert all(devices[n].stats.download_bytes == 0 for n in NODE_IDS)

        # every status went sealed through the root, batched; no node sent one on its own session
        statuses = ("downloading", "installing", "rebooting", "success")
        for n in nodes:
            assert [s for _, s in n.delivered] == list(statuses)
            assert n.sealed_reports == len(statuses) and n.direct_reports == 0
        assert not any(
            "/status" in path for _, path, _, rid in side.seen[seen_before:] if rid and len(rid) == 1
        )
        assert sum(collector.batch_sizes) == NODES * len(statuses)
        assert max(collector.batch_sizes) > 1
        # the root handled only ciphertext: no status word, deployment id or device id in it
        for datagram in collector.seen:
            for secret in (b"success", b"downloading", deployment.encode(), b"status"):
                assert secret not in datagram

        _print_figures(collector, root_dev, devices[NODE_IDS[0]], deployment)


def _print_figures(collector: RecordCollectorUdp, root: MqttSnDevice, node: MqttSnDevice, dep: str) -> None:
    records = sum(collector.batch_sizes)
    batched = root.stats.batch_bytes / records
    uplink = collector.batcher.stats.record_bytes / records + 2
    body = b'{"status":"success"}'
    individual = len(RequestEnvelope("3", "PUT", node.token, "application/json", body, serial=42).encode())
    topic = len(f"/mender/api/devices/v1/deployments/device/deployments/{dep}/status")
    print(
        f"\nstatus report, application bytes toward the gateway: sealed+batched {batched:.1f} B/record "
        f"({records} records in {len(collector.batch_sizes)} batches; node->root frame {uplink:.1f} B) vs "
        f"individual MQTT-SN request envelope {individual} B (+ REGISTER of a {topic}-byte topic once)"
    )
