"""What the tenant-scoping statement hook costs on the device path, in one process, no network.

The device cycle of benchmarks/api_http.py (auth, inventory, next, status) through the router
(the layer both adapters call), in blocks of 100 cycles that alternate (ABBA) between the engine
with the hook (bridge/store/_tenancy.py) and without it; process CPU time per request of each.
``--identity``: every request carries a transport identity, as over MQTT (the auth request then
also looks up the identity's organisation — in both variants). The end-to-end comparisons are
``api_http.py --compare-scoping`` and ``api_mqtt.py --compare-scoping``; on a busy machine their
noise is larger than this effect, which is why this one exists.

    .venv/bin/python benchmarks/scoping_inprocess.py [--blocks 16] [--identity]
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
from sqlalchemy import event  # noqa: E402

from bridge.api import (  # noqa: E402
    ApiContext,
    Request,
    Settings,
    build_router,
    create_deployment,
    set_auth_status,
    store_artifact,
)
from bridge.artifacts import BlobStore  # noqa: E402
from bridge.service import operator  # noqa: E402
from bridge.store import DEFAULT_ORG_ID, Store, tables, tenant_scope  # noqa: E402
from bridge.store._tenancy import _before_execute  # noqa: E402


async def main_async(args: argparse.Namespace, tmp: Path) -> None:
    store = Store.open(f"sqlite:///{tmp / 'db.sqlite'}")
    await store.migrate()
    ctx = await ApiContext.create(store, BlobStore(tmp / "blobs"), Settings())
    router = build_router(ctx)
    identity = "node-0001" if args.identity else None
    device = api_http.Device(1, None)  # type: ignore[arg-type]
    auth = Request("POST", "/api/devices/v1/authentication/auth_requests", body=device.body,
                   headers={"x-men-signature": device.sig}, identity=identity)  # fmt: skip
    assert (await router.handle(auth)).status == 401
    with tenant_scope(DEFAULT_ORG_ID):
        async with store.transaction() as conn:
            dev = (await conn.execute(sa.select(tables.devices.c.id))).scalar_one()
            await set_auth_status(conn, dev, None, "accepted")
    await store_artifact(ctx, api_http.make_artifact(tmp).read_bytes(), "", by=operator(DEFAULT_ORG_ID))
    with tenant_scope(DEFAULT_ORG_ID):
        async with store.transaction() as conn:
            await create_deployment(conn, name="bench", artifact_name="v1", device_ids=[dev])
    inv = json.dumps(
        [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]
    ).encode()
    provides = json.dumps({"device_provides": {"artifact_name": "v0", "device_type": "bench"}}).encode()

    async def cycle() -> None:
        token = (await router.handle(auth)).body.decode()
        h = {"authorization": f"Bearer {token}"}
        r = await router.handle(
            Request(
                "PUT", "/api/devices/v1/inventory/device/attributes", headers=h, body=inv, identity=identity
            )
        )
        assert r.status == 200, r.body
        r = await router.handle(
            Request(
                "POST",
                "/api/devices/v2/deployments/device/deployments/next",
                headers=h,
                body=provides,
                identity=identity,
            )
        )
        assert r.status == 200, (r.status, r.body)
        dep = json.loads(r.body)["id"]
        status = f"/api/devices/v1/deployments/device/deployments/{dep}/status"
        body = b'{"status":"downloading"}'
        r = await router.handle(Request("PUT", status, headers=h, body=body, identity=identity))
        assert r.status == 204, r.body

    engine = store.engine.sync_engine
    for _ in range(5):
        await cycle()
    cpu = {"scoped": 0.0, "unscoped": 0.0}
    for block in range(args.blocks):
        for mode in ("scoped", "unscoped") if block % 2 == 0 else ("unscoped", "scoped"):
            installed = event.contains(engine, "before_execute", _before_execute)
            if mode == "unscoped" and installed:
                event.remove(engine, "before_execute", _before_execute)
            elif mode == "scoped" and not installed:
                event.listen(engine, "before_execute", _before_execute, retval=True)
            t0 = time.process_time()
            for _ in range(100):
                await cycle()
            cpu[mode] += time.process_time() - t0
    await store.close()
    requests = args.blocks * 100 * 4
    print(f"device cycle in process, {requests} requests per variant, identity={identity}")
    for mode, seconds in cpu.items():
        print(f"  {mode:<9} CPU {seconds / requests * 1e6:5.0f} us/request")
    print(f"tenant-scoping hook: {(cpu['scoped'] / cpu['unscoped'] - 1) * 100:+.1f} % CPU per request")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=16, help="blocks of 100 cycles per variant (ABBA)")
    p.add_argument(
        "--identity", action="store_true", help="requests carry a transport identity (as over MQTT)"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main_async(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
