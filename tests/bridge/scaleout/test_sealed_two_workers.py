"""A sealed record accepted by one worker is refused when replayed to the other (one PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bridge.api import create_user
from bridge.mqtt import BridgePolicy
from tests.support.broker import Mosquitto
from tests.support.mender import ADMIN, Db, accept, auth_body, device_key
from tests.support.mqtt import StampingCaller, start_bridge_server
from tests.support.workers import StampedCaller
from wire.envelope import BULK_TOPIC, BulkError, BulkReply, BulkRequest
from wire.sealed import RecordOp, derive_record_key, encode_request, seal_record

NODE, ROOT = "node-s", "root-s"
KEYS = {NODE: derive_record_key(NODE, b"\x07" * 16)}


def test_replayed_sealed_record_refused_by_the_other_worker(
    pg_db: Db, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    servers = [
        start_bridge_server(
            pg_db.url,
            tmp_path / name,
            mosquitto.port,
            schema=pg_db.schema,
            policy=BridgePolicy(),
            record_keys=KEYS,
            client_id=name,
            share_group="g",
        )
        for name in ("wa", "wb")
    ]
    caller = StampingCaller(mosquitto.port)
    try:

        async def add() -> None:
            async with servers[0].context.store.transaction() as conn:
                await create_user(conn, *ADMIN)

        servers[0].run_coroutine(add())
        admin = httpx.post(f"{servers[0].url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
        with httpx.Client(base_url=servers[0].url, headers={"Authorization": f"Bearer {admin}"}) as mgmt:
            body, sig = auth_body(device_key("ed25519"), "02:00:00:00:07:01")
            path, hdr = "/api/devices/v1/authentication/auth_requests", {"x-men-signature": sig}
            assert caller.call(NODE, "POST", path, body=body, headers=hdr).status == 401
            accept(mgmt)
            assert caller.call(NODE, "POST", path, body=body, headers=hdr).status == 200

        record = seal_record(
            KEYS[NODE], 1, encode_request(RecordOp.INVENTORY_PATCH, "", [{"name": "a", "value": "1"}])
        )

        async def run() -> tuple[str, list[tuple[object, str]]]:
            bulk = await StampedCaller().connect(mosquitto.host, mosquitto.port)
            try:

                async def send(batch_id: str) -> tuple[object, str]:
                    bulk.publish(ROOT, BULK_TOPIC, BulkRequest(batch_id, [record]).encode())
                    topic = f"/mender/responses/{ROOT}/{batch_id}"
                    while topic not in bulk.replies.got:
                        bulk.replies.arrived.clear()
                        await asyncio.wait_for(bulk.replies.arrived.wait(), 15)
                    payload, worker = bulk.replies.got[topic][0]
                    return BulkReply.decode(payload).entries[0], worker

                first_entry, first_worker = await send("b0")
                assert isinstance(first_entry, bytes)  # accepted, a sealed answer
                replays = []
                for i in range(1, 9):  # the broker alternates the shared subscription's members
                    replays.append(await send(f"b{i}"))
                    if any(w != first_worker for _, w in replays):
                        break
                return first_worker, replays
            finally:
                bulk.close()

        first_worker, replays = asyncio.run(run())
        assert all(entry == BulkError.REPLAYED for entry, _ in replays)
        assert any(worker != first_worker for _, worker in replays)  # the other worker refused it too
    finally:
        caller.close()
        for server in servers:
            server.stop()
