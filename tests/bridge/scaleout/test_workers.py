"""Two or three bridge worker processes on one PostgreSQL and one mosquitto (shared subscription).

- one worker killed mid-load: every request is answered and ran exactly once (counted in the DB);
- a decommissioned device's token is refused by every worker within 1 s (LISTEN/NOTIFY);
- the singleton job runs in exactly one process, and another takes over when it dies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from bridge.api import decommission_device, set_auth_status
from bridge.store import Store
from bridge.store import tables as t
from tests.support.broker import Mosquitto
from tests.support.mender import Db, auth_body, device_key
from tests.support.workers import COUNT_PATH, StampedCaller, spawn_workers
from wire.envelope import RequestEnvelope, request_topic


async def _settings_rows(db: Db, prefix: str) -> list[tuple[str, str]]:
    store = Store.open(db.url, schema=db.schema)
    try:
        async with store.read() as conn:
            rows = await conn.execute(
                sa.select(t.settings.c.key, t.settings.c.value).where(t.settings.c.key.like(f"{prefix}%"))
            )
            return [(str(k), str(v)) for k, v in rows]
    finally:
        await store.close()


def test_worker_killed_mid_load_every_request_runs_exactly_once(pg_db: Db, mosquitto: Mosquitto) -> None:
    total = 400
    with spawn_workers(2, pg_db.url, pg_db.schema, mosquitto.url, handler_delay=0.002) as workers:

        async def run() -> dict[str, str]:
            caller = await StampedCaller().connect(mosquitto.host, mosquitto.port)
            envelopes = {}
            for i in range(total):
                device, rid = f"node-{i % 40}", f"r{i}"
                body = json.dumps({"nonce": f"n{i}"}).encode()
                envelopes[i] = (
                    device,
                    rid,
                    RequestEnvelope(rid, "POST", None, "application/json", body).encode(),
                )
            topic = request_topic(COUNT_PATH)
            for i in range(total):
                device, _, payload = envelopes[i]
                caller.publish(device, topic, payload)
                if i == total // 3:
                    workers[0].kill()  # SIGKILL mid-load: its unanswered requests stay in its session
                await asyncio.sleep(0.003)
            # nodes re-send what was not answered (same envelope), as firmware does after a timeout;
            # the killed worker comes back (same client id: its session is redelivered to it)
            restarted = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                missing = [
                    i
                    for i in range(total)
                    if f"/mender/responses/{envelopes[i][0]}/{envelopes[i][1]}" not in caller.replies.got
                ]
                if not missing:
                    break
                if not restarted:
                    workers[0].restart()
                    restarted = True
                for i in missing:
                    caller.publish(envelopes[i][0], topic, envelopes[i][2])
            await asyncio.sleep(1.0)  # late copies (redeliveries) arrive too
            caller.close()
            answered = {}
            for i in range(total):
                copies = caller.replies.got.get(f"/mender/responses/{envelopes[i][0]}/{envelopes[i][1]}", [])
                bodies = {json.loads(RequestEnvelopeBody(p))["nonce"] for p, _ in copies}
                assert bodies == {f"n{i}"}, (i, copies)  # every copy of a reply is the same answer
                answered[f"n{i}"] = copies[0][1]
            assert restarted
            return answered

        answered = asyncio.run(run())
    assert len(answered) == total  # every request answered
    assert set(answered.values()) == {"w0", "w1"}  # both workers served some
    runs = Counter(key.split(":")[1] for key, _ in asyncio.run(_settings_rows(pg_db, "count:")))
    assert {nonce: n for nonce, n in runs.items() if n != 1} == {}  # exactly once, in the database
    assert set(runs) == set(answered)


def RequestEnvelopeBody(payload: bytes) -> bytes:
    from wire.envelope import ResponseEnvelope

    return ResponseEnvelope.decode(payload).body


def test_decommissioned_token_refused_by_every_worker_within_a_second(
    pg_db: Db, mosquitto: Mosquitto
) -> None:
    with spawn_workers(2, pg_db.url, pg_db.schema, mosquitto.url):

        async def run() -> None:
            caller = await StampedCaller().connect(mosquitto.host, mosquitto.port)
            key = device_key("ed25519")
            body, sig = auth_body(key, "02:00:00:00:00:42")
            auth = "/api/devices/v1/authentication/auth_requests"
            status, _, _ = await caller.call(
                "node-42", "a1", "POST", auth, body, headers={"x-men-signature": sig}
            )
            assert status == 401  # pending
            store = Store.open(pg_db.url, schema=pg_db.schema)
            try:
                async with store.transaction() as conn:
                    device_id = (await conn.execute(sa.select(t.devices.c.id))).scalar_one()
                    await set_auth_status(conn, device_id, None, "accepted")
                status, token_bytes, _ = await caller.call(
                    "node-42", "a2", "POST", auth, body, headers={"x-men-signature": sig}
                )
                assert status == 200
                token = token_bytes.decode()
                inv = json.dumps([{"name": "device_type", "value": "w"}]).encode()
                path = "/api/devices/v1/inventory/device/attributes"
                served: set[str] = set()
                for i in range(20):  # warm both workers' caches with "accepted"
                    status, _, worker = await caller.call("node-42", f"i{i}", "PATCH", path, inv, token)
                    assert status == 200
                    served.add(worker)
                assert served == {"w0", "w1"}
                async with store.transaction() as conn:
                    await decommission_device(conn, device_id)
                decommissioned = time.monotonic()
                refused: set[str] = set()
                for i in range(20):
                    status, _, worker = await caller.call("node-42", f"d{i}", "PATCH", path, inv, token)
                    assert status == 401, (i, worker, time.monotonic() - decommissioned)
                    refused.add(worker)
                assert time.monotonic() - decommissioned < 1.0 and refused == {"w0", "w1"}
            finally:
                await store.close()
                caller.close()

        asyncio.run(run())


def test_singleton_job_runs_in_exactly_one_process(pg_db: Db, mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def ticking_pids(since: int) -> list[str]:
        rows = await _settings_rows(pg_db, "tick:")
        return [key.split(":")[1] for key, _ in rows][since:]

    def pids_by_tick() -> list[tuple[str, int]]:
        rows = asyncio.run(_settings_rows(pg_db, "tick:"))
        return [(k.split(":")[1], int(k.split(":")[2])) for k, _ in rows]

    with spawn_workers(3, pg_db.url, pg_db.schema, mosquitto.url) as workers:
        time.sleep(2.0)
        first = {pid for pid, _ in pids_by_tick()}
        assert len(first) == 1  # one process ticks, the other two wait for the lock
        leader = next(w for w in workers if str(w.proc.pid) in first)
        seen = len(pids_by_tick())
        leader.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            later = {pid for pid, _ in pids_by_tick()[seen:]} - first
            if later:
                break
        time.sleep(1.5)
        after = {pid for pid, _ in pids_by_tick()} - first
        assert len(after) == 1  # exactly one successor, never two at once
        alive = {str(w.proc.pid) for w in workers if w.proc.poll() is None}
        assert after <= alive
    del ticking_pids
