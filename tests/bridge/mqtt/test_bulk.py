"""Sealed records batched by an untrusted root, through the real bridge and mosquitto."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import msgpack
import pytest

from bridge.api import create_user
from bridge.mqtt import BridgePolicy
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from tests.support.broker import start_test_mosquitto
from tests.support.mender import ADMIN, accept, auth_body, device_key
from tests.support.mqtt import StampingCaller, start_bridge_server
from wire.envelope import BULK_TOPIC, BulkError, BulkReply, BulkRequest
from wire.sealed import (
    TO_NODE,
    RecordOp,
    SealedRecordError,
    decode_reply,
    derive_record_key,
    encode_request,
    open_record,
    seal_record,
)

NODES = [f"node-{i}" for i in range(4)]
ROOT = "root-1"
PSKS = {name: bytes([i + 1]) * 16 for i, name in enumerate(NODES)}
KEYS = {name: derive_record_key(name, psk) for name, psk in PSKS.items()}


@dataclass
class World:
    mqtt: StampingCaller
    mgmt: httpx.Client
    mender_ids: dict[str, str]
    port: int = 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("bulk")
    broker = start_test_mosquitto(tmp / "mosquitto")
    server = start_bridge_server(
        f"sqlite:///{tmp / 'db.sqlite'}", tmp, broker.port, policy=BridgePolicy(), record_keys=KEYS
    )
    caller = StampingCaller(broker.port)
    try:

        async def add() -> None:
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
                async with server.context.store.transaction() as conn:
                    await create_user(conn, *ADMIN)

        server.run_coroutine(add())
        admin = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
        mgmt = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        ids: dict[str, str] = {}
        for i, node in enumerate(NODES):
            key = device_key("ed25519")
            body, sig = auth_body(key, f"02:00:00:00:01:{i:02x}")
            path = "/api/devices/v1/authentication/auth_requests"
            hdr = {"x-men-signature": sig}
            assert caller.call(node, "POST", path, body=body, headers=hdr).status == 401
            devices = mgmt.get("/api/management/v2/devauth/devices").json()
            pending = next(d for d in devices if d["status"] == "pending")
            ids[node] = accept(mgmt, pending["id"])
            # authenticating over its own (stamped) session binds the token to the node
            assert caller.call(node, "POST", path, body=body, headers=hdr).status == 200
        yield World(caller, mgmt, ids, broker.port)
        mgmt.close()
    finally:
        caller.close()
        server.stop()
        broker.stop()


def _send_batch(w: World, batch_id: str, records: list[bytes]) -> BulkReply:
    w.mqtt.publish(BULK_TOPIC, BulkRequest(batch_id, records).encode(), ROOT)
    return BulkReply.decode(w.mqtt.wait(f"/mender/responses/{ROOT}/{batch_id}"))


def _inventory(node: str, n: int) -> bytes:
    return encode_request(RecordOp.INVENTORY_PATCH, "", [{"name": f"k{n}", "value": f"{node}-{n}"}])


def _open_reply(node: str, seq: int, entry: bytes | int) -> tuple[int, bytes]:
    assert isinstance(entry, bytes), f"error code {entry} for {node} seq {seq}"
    _key, got_seq, plain = open_record([KEYS[node]], entry, direction=TO_NODE)
    assert got_seq == seq
    return decode_reply(plain)


@pytest.mark.integration
def test_hundred_records_in_one_message_all_processed(world: World) -> None:
    records, expect = [], []
    for n in range(25):
        for node in NODES:
            seq = 100 + n
            records.append(seal_record(KEYS[node], seq, _inventory(node, n)))
            expect.append((node, seq))
    assert len(records) == 100
    reply = _send_batch(world, "b-100", records)
    assert reply.status == 200 and len(reply.entries) == 100
    for (node, seq), entry in zip(expect, reply.entries, strict=True):
        assert _open_reply(node, seq, entry)[0] == 200
    for node in NODES:
        inv = world.mgmt.get(f"/api/management/v1/inventory/devices/{world.mender_ids[node]}").json()
        values = {a["name"]: a["value"] for a in inv["attributes"]}
        assert all(values[f"k{n}"] == f"{node}-{n}" for n in range(25))
    # a "next" record answers sealed, like the HTTP call would (no deployment: 204)
    provides = {"device_provides": {"device_type": "t", "artifact_name": "a"}}
    rec = seal_record(KEYS["node-0"], 500, encode_request(RecordOp.NEXT, "", provides))
    assert _open_reply("node-0", 500, _send_batch(world, "b-next", [rec]).entries[0]) == (204, b"")


@pytest.mark.integration
def test_tampered_record_rejected_others_succeed(world: World) -> None:
    good = [seal_record(KEYS[n], 1000, _inventory(n, 99)) for n in NODES]
    tampered = bytearray(good[1])
    tampered[-10] ^= 0x01  # the root flips one ciphertext bit
    forged_seq = bytearray(good[2])
    forged_seq[3] = (forged_seq[3] + 1) & 0x7F  # the root rewrites the sequence number
    batch = [good[0], bytes(tampered), bytes(forged_seq), good[3], b"\x00" * 5]
    reply = _send_batch(world, "b-tamper", batch)
    assert _open_reply("node-0", 1000, reply.entries[0])[0] == 200
    assert reply.entries[1] == BulkError.UNOPENABLE
    assert reply.entries[2] == BulkError.UNOPENABLE
    assert _open_reply("node-3", 1000, reply.entries[3])[0] == 200
    assert reply.entries[4] == BulkError.UNOPENABLE


@pytest.mark.integration
def test_replayed_record_rejected(world: World) -> None:
    record = seal_record(KEYS["node-1"], 2000, _inventory("node-1", 7))
    first = _send_batch(world, "b-replay-1", [record])
    assert _open_reply("node-1", 2000, first.entries[0])[0] == 200
    # the root replays the record in a new batch (a redelivered batch id would get the cached reply)
    again = _send_batch(world, "b-replay-2", [record, record])
    assert again.entries == [BulkError.REPLAYED, BulkError.REPLAYED]
    old = seal_record(KEYS["node-1"], 2000 - 64, _inventory("node-1", 8))  # older than the window
    assert _send_batch(world, "b-replay-3", [old]).entries == [BulkError.REPLAYED]
    # a redelivery of the same batch (QoS 1 DUP) is answered once more with the same bytes, not re-run
    world.mqtt.publish(BULK_TOPIC, BulkRequest("b-replay-1", [record]).encode(), ROOT)
    topic = f"/mender/responses/{ROOT}/b-replay-1"
    for _ in range(100):
        if world.mqtt.copies(topic) == 2:
            break
        time.sleep(0.05)
    assert world.mqtt.copies(topic) == 2


@pytest.mark.integration
def test_root_never_sees_plaintext(world: World) -> None:
    marker = "PLAINTEXT-MARKER-42"
    rec = seal_record(
        KEYS["node-2"], 3000, encode_request(RecordOp.INVENTORY_PATCH, "", [{"name": "m", "value": marker}])
    )
    batch = BulkRequest("b-plain", [rec]).encode()
    assert marker.encode() not in batch
    reply = _send_batch(world, "b-plain", [rec])
    raw = world.mqtt.wait(f"/mender/responses/{ROOT}/b-plain")
    assert marker.encode() not in raw and b"value" not in raw
    assert _open_reply("node-2", 3000, reply.entries[0])[0] == 200
    # without the node's key the root cannot open the reply either
    with pytest.raises(SealedRecordError):
        open_record([derive_record_key("node-2", b"wrong" * 4)], reply.entries[0], direction=TO_NODE)


@pytest.mark.integration
def test_unprovisioned_device_record_is_unopenable(world: World) -> None:
    rec = seal_record(derive_record_key("node-x", b"x" * 16), 1, _inventory("node-x", 1))
    assert _send_batch(world, "b-unknown", [rec]).entries == [BulkError.UNOPENABLE]


def test_record_overhead_within_16_bytes() -> None:
    plain = _inventory("node-0", 1)
    for seq in (1, 16_383, (1 << 21) - 1):
        record = seal_record(KEYS["node-0"], seq, plain)
        framed = len(msgpack.packb([record], use_bin_type=True)) - 1  # minus the 1-byte array header
        assert framed - len(plain) <= 16, (seq, framed - len(plain))


@pytest.mark.integration
def test_records_on_another_organisations_bulk_topic_are_refused(world: World) -> None:
    """(Last: its sequence numbers move the replay windows past the other tests'.)
    A batch on organisation X's bulk topic (docs/topics.md, "Organisations") runs each record
    as a request of X: these default-organisation devices' records get 403 (sealed), answered on
    X's response topic, and nothing is written."""
    org = "0a1b2c3d-aaaa-4000-8000-00000000000a"
    spy = StampingCaller(world.port, subscribe=f"/mender/t/{org}/responses/#")
    try:
        records = [seal_record(KEYS[n], 9000, _inventory(n, 77)) for n in NODES]
        spy.publish(f"/mender/t/{org}/bulk/v1", BulkRequest("b-org", records).encode(), ROOT)
        reply = BulkReply.decode(spy.wait(f"/mender/t/{org}/responses/{ROOT}/b-org"))
        for node, entry in zip(NODES, reply.entries, strict=True):
            status, body = _open_reply(node, 9000, entry)
            assert status == 403 and b"another organisation" in body
        inv = world.mgmt.get(f"/api/management/v1/inventory/devices/{world.mender_ids['node-0']}").json()
        assert "k77" not in {a["name"] for a in inv["attributes"]}
        # the same devices' next records on the default organisation's topic: as always
        again = [seal_record(KEYS[n], 9001, _inventory(n, 77)) for n in NODES]
        assert all(
            _open_reply(n, 9001, e)[0] == 200
            for n, e in zip(NODES, _send_batch(world, "b-def", again).entries, strict=True)
        )
    finally:
        spy.close()
