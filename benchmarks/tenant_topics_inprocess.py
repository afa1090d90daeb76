"""What an organisation's MQTT topics cost on the device path, in one process, no network.

The device cycle of benchmarks/api_http.py (auth, inventory, next, status) as MQTT envelopes
through the bridge's transport-free half — the topic split of ``MqttBridge._admit``, the stamp,
``MqttApiAdapter.handle`` (router, handlers, store) and the reply topic — for two devices in one
database: one of the default organisation on ``/mender/api/...``, one of an organisation on
``/mender/t/{org}/api/...`` (its token, deployment and rows in that organisation). Blocks of 100
cycles alternate (ABBA); process CPU time per request of each. The end-to-end comparison is
``api_mqtt.py --compare-tenant-topics``; on a busy machine its noise (±10-20 %) is larger than
this effect, which is why this one exists.

    .venv/bin/python benchmarks/tenant_topics_inprocess.py [--blocks 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import api_http  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bridge.api import (  # noqa: E402
    ApiContext,
    Settings,
    build_router,
    create_deployment,
    set_auth_status,
    store_artifact,
)
from bridge.artifacts import BlobStore  # noqa: E402
from bridge.mqtt import BridgePolicy  # noqa: E402
from bridge.mqtt._adapter import MqttApiAdapter  # noqa: E402
from bridge.mqtt._service import stamped_identity_of  # noqa: E402
from bridge.service import create_org, operator  # noqa: E402
from bridge.store import DEFAULT_ORG_ID, Store, tables, tenant_scope  # noqa: E402
from wire.envelope import RequestEnvelope, ResponseEnvelope, request_topic  # noqa: E402
from wire.tenant_topics import split_tenant_topic, tenant_topic  # noqa: E402

AUTH = "/api/devices/v1/authentication/auth_requests"


class Node:
    """One device speaking envelopes on its organisation's topics, as the gateway forwards them."""

    def __init__(self, adapter: MqttApiAdapter, device: api_http.Device, stamp: str, org: str) -> None:
        self.adapter, self.device, self.org = adapter, device, org
        self.pairs = [("meshota-device", stamp), ("meshota-verified", "1")]
        self.ids = 0

    async def call(
        self,
        method: str,
        path: str,
        body: bytes,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ResponseEnvelope:
        self.ids += 1
        env = RequestEnvelope(f"r{self.ids}", method, token, "application/json", body, {}, headers or {})
        topic = tenant_topic(request_topic(path), self.org)
        split = split_tenant_topic(topic)  # MqttBridge._admit
        assert split is not None
        who = stamped_identity_of(self.pairs, split[0])
        assert who is not None
        reply = await self.adapter.handle(split[1], env.encode(), who)
        assert reply is not None and reply.topic == tenant_topic(
            f"/mender/responses/{who.device}/r{self.ids}", self.org
        )
        return ResponseEnvelope.decode(reply.payload)

    async def auth(self) -> ResponseEnvelope:
        return await self.call("POST", AUTH, self.device.body, headers={"x-men-signature": self.device.sig})


async def main_async(args: argparse.Namespace, tmp: Path) -> None:
    store = Store.open(f"sqlite:///{tmp / 'db.sqlite'}")
    await store.migrate()
    ctx = await ApiContext.create(store, BlobStore(tmp / "blobs"), Settings())
    adapter = MqttApiAdapter(build_router(ctx), BridgePolicy(require_verified=True))
    async with store.transaction() as conn:
        org = (await create_org(conn, "bench-org")).id
    nodes = {
        "default": Node(adapter, api_http.Device(1, None), "node-d", DEFAULT_ORG_ID),  # type: ignore[arg-type]
        "organisation": Node(adapter, api_http.Device(2, None), "node-o", org),  # type: ignore[arg-type]
    }
    art = api_http.make_artifact(tmp).read_bytes()
    for node in nodes.values():
        assert (await node.auth()).status == 401
        with tenant_scope(node.org):
            async with store.transaction() as conn:
                dev = (await conn.execute(sa.select(tables.devices.c.id))).scalar_one()
                await set_auth_status(conn, dev, None, "accepted")
        await store_artifact(ctx, art, "", by=operator(node.org))
        with tenant_scope(node.org):
            async with store.transaction() as conn:
                await create_deployment(conn, name="bench", artifact_name="v1", device_ids=[dev])
    inv = json.dumps(
        [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]
    ).encode()
    provides = json.dumps({"device_provides": {"artifact_name": "v0", "device_type": "bench"}}).encode()

    async def cycle(node: Node) -> None:
        r = await node.auth()
        assert r.status == 200, r
        token = r.body.decode()
        r = await node.call("PUT", "/api/devices/v1/inventory/device/attributes", inv, token)
        assert r.status == 200, r
        r = await node.call("POST", "/api/devices/v2/deployments/device/deployments/next", provides, token)
        assert r.status == 200, r
        status = f"/api/devices/v1/deployments/device/deployments/{json.loads(r.body)['id']}/status"
        r = await node.call("PUT", status, b'{"status":"downloading"}', token)
        assert r.status == 204, r

    for node in nodes.values():
        for _ in range(5):
            await cycle(node)
    cpu = dict.fromkeys(nodes, 0.0)
    names = list(nodes)
    for block in range(args.blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            t0 = time.process_time()
            for _ in range(100):
                await cycle(nodes[name])
            cpu[name] += time.process_time() - t0
    await store.close()
    requests = args.blocks * 100 * 4
    print(f"device cycle as MQTT envelopes in process, {requests} requests per variant")
    for name, seconds in cpu.items():
        print(f"  {name:<13} CPU {seconds / requests * 1e6:5.0f} us/request")
    print(
        f"an organisation's topics: {(cpu['organisation'] / cpu['default'] - 1) * 100:+.1f} % CPU per request"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=16, help="blocks of 100 cycles per variant (ABBA)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main_async(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
