"""Device API over MQTT vs HTTP, same workload, same server process, same run.

N devices doing auth -> inventory -> next -> status (benchmarks/api_http.py's ``cycle``, unchanged)
first over HTTP (api_http's raw keep-alive connection per device), then over MQTT through a
private mosquitto and the bridge running in the same ``meshota server --broker`` process. The
MQTT devices publish request envelopes carrying the ``meshota-device`` stamp the gateway adds
(one broker connection shared by all, like the gateway's aggregating mode, ``--mqtt-connections``
to spread them) and wait for the reply on their response topic. Prints both rates, p50/p99 and
the ratio (target: MQTT >= 1.5x HTTP at equal p99), then bytes per request on the MQTT-SN link:
one individual PUBLISH per request vs one sealed record in a root's batch.

    .venv/bin/python benchmarks/api_mqtt.py --devices 50 --rounds 5 [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import aiomqtt  # noqa: E402
import api_http  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from firmware_proto.api_envelope import (  # noqa: E402
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
    BulkRequest,
    RequestEnvelope,
    ResponseEnvelope,
    request_topic,
)
from meshota.broker import start_mosquitto  # noqa: E402

_PASSED = {"x-men-signature": "x-men-signature", "range": "range"}


class MqttLink:
    """One broker connection carrying many devices' requests (the gateway's role); futures by topic."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.waiting: dict[str, asyncio.Future[bytes]] = {}
        self.props: dict[str, Properties] = {}

    async def receive(self) -> None:
        async for message in self.client.messages:
            fut = self.waiting.pop(message.topic.value, None)
            if fut is not None and not fut.done():
                assert isinstance(message.payload, bytes)
                fut.set_result(message.payload)

    def stamp(self, device: str) -> Properties:
        props = self.props.get(device)
        if props is None:
            props = self.props[device] = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1")]
        return props


class MqttConnection:
    """api_http's connection interface (request -> (status, body)) over the MQTT bridge."""

    _ids = itertools.count(1)

    def __init__(self, link: MqttLink, device: str) -> None:
        self.link, self.device = link, device

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        token = ctype = None
        extra = {}
        for key, value in (headers or {}).items():
            lkey = key.lower()
            if lkey == "authorization":
                token = value.split(" ", 1)[1]
            elif lkey == "content-type":
                ctype = value
            elif lkey in _PASSED:
                extra[lkey] = value
        rid = f"b{next(self._ids)}"
        env = RequestEnvelope(rid, method, token, ctype, body, {}, extra)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.link.waiting[f"/mender/responses/{self.device}/{rid}"] = fut
        await self.link.client.publish(
            request_topic(path), env.encode(), qos=1, properties=self.link.stamp(self.device)
        )
        reply = ResponseEnvelope.decode(await asyncio.wait_for(fut, 60))
        return reply.status, reply.body

    def close(self) -> None:
        pass


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values) * 1000, values[min(len(values) - 1, int(len(values) * 0.99))] * 1000


async def measure(devices: list[api_http.Device], rounds: int) -> tuple[float, list[float], dict[str, Any]]:
    lat: dict[str, list[float]] = {k: [] for k in ("auth", "inventory", "next", "status")}

    async def run(d: api_http.Device) -> None:
        for _ in range(rounds):
            await api_http.cycle(d, lat)

    t0 = time.perf_counter()
    await asyncio.gather(*(run(d) for d in devices))
    elapsed = time.perf_counter() - t0
    everything = [x for v in lat.values() for x in v]
    return len(everything) / elapsed, everything, lat


async def main_async(args: argparse.Namespace, url: str, broker_port: int, tmp: Path) -> None:
    host, port = url.rsplit("//", 1)[1].split(":")
    n = args.devices
    clients = [
        aiomqtt.Client("127.0.0.1", broker_port, identifier=f"bench-gw-{i}",
                       protocol=aiomqtt.ProtocolVersion.V5, max_queued_outgoing_messages=None)
        for i in range(args.mqtt_connections)
    ]  # fmt: skip
    for c in clients:
        await c.__aenter__()
        c.pending_calls_threshold = 1 << 30
        await c.subscribe("/mender/responses/#", qos=1)
    links = [MqttLink(c) for c in clients]
    receivers = [asyncio.create_task(link.receive()) for link in links]
    http_devices = [api_http.Device(i, api_http.RawConnection(host, int(port))) for i in range(n)]
    mqtt_devices = [
        api_http.Device(4096 + i, MqttConnection(links[i % len(links)], f"node-{i:04d}")) for i in range(n)
    ]  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        # enroll both sets (pending), over their own transport: MQTT binds node-i to its device
        await asyncio.gather(*(d.auth() for d in http_devices + mqtt_devices))
        token = (await c.post("/api/management/v1/useradm/auth/login", auth=api_http.ADMIN)).text
        m = {"Authorization": f"Bearer {token}"}
        listing = (await c.get("/api/management/v2/devauth/devices?per_page=500", headers=m)).json()
        assert len(listing) == 2 * n, len(listing)
        for dev in listing:
            aid = dev["auth_sets"][0]["id"]
            await c.put(f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
                        json={"status": "accepted"}, headers=m)  # fmt: skip
        art = api_http.make_artifact(tmp)
        r = await c.post("/api/management/v1/deployments/artifacts", headers=m,
                         files={"artifact": (art.name, art.read_bytes())})  # fmt: skip
        assert r.status_code == 201, r.text
        r = await c.post("/api/management/v1/deployments/deployments", headers=m,
                         json={"name": "bench", "artifact_name": "v1", "all_devices": True})  # fmt: skip
        assert r.status_code == 201, r.text
    results = {}
    for name, devs in (("http", http_devices), ("mqtt", mqtt_devices)):
        if args.only and name != args.only:
            continue
        await measure(devs, 1)  # warm-up round (first next/status of the deployment)
        results[name] = await measure(devs, args.rounds)
    for d in http_devices:
        d.conn.close()
    for task in receivers:
        task.cancel()
    for c in clients:
        await c.__aexit__(None, None, None)

    print(f"devices={n} rounds={args.rounds} db={args.db or 'sqlite (temp file)'} "
          f"mqtt connections={args.mqtt_connections} (requests QoS 1, replies QoS 1)")  # fmt: skip
    for name, (rate, everything, lat) in results.items():
        p50, p99 = percentiles(everything)
        print(
            f"{name:<5} requests={len(everything):<6} {rate:7.0f} req/s  p50={p50:6.1f} ms  p99={p99:6.1f} ms"
        )
        for op, values in lat.items():
            q50, q99 = percentiles(values)
            print(f"        {op:<10} p50={q50:6.1f} ms  p99={q99:6.1f} ms")
    if len(results) < 2:
        return
    http_rate, mqtt_rate = results["http"][0], results["mqtt"][0]
    http_p99, mqtt_p99 = percentiles(results["http"][1])[1], percentiles(results["mqtt"][1])[1]
    verdict = "met" if mqtt_rate >= 1.5 * http_rate and mqtt_p99 <= http_p99 else "NOT met"
    print(f"MQTT / HTTP throughput = {mqtt_rate / http_rate:.2f} (p99 {mqtt_p99:.1f} vs {http_p99:.1f} ms); "
          f"target >= 1.5 at equal p99: {verdict}")  # fmt: skip
    print_link_bytes(mqtt_devices[0])


def print_link_bytes(device: api_http.Device) -> None:
    """Encoded bytes on the MQTT-SN link: one PUBLISH per request vs one sealed record in a batch."""
    import json

    from firmware_proto.sealed import RecordOp, derive_record_key, encode_request, seal_record
    from mqttsn import Publish
    from mqttsn._codec import encode

    inv = [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]
    cases = {
        "inventory": (RecordOp.INVENTORY_PUT, "", inv, "PUT", "/api/devices/v1/inventory/device/attributes"),
        "next": (RecordOp.NEXT, "", {"device_provides": {"artifact_name": "v0", "device_type": "bench"}},
                 "POST", "/api/devices/v2/deployments/device/deployments/next"),
        "status": (RecordOp.STATUS, "6f9b2f0e-1d2c-4b7a-9a51-3c1e2d4f5a6b", {"status": "downloading"}, "PUT",
                   "/api/devices/v1/deployments/device/deployments/6f9b2f0e-1d2c-4b7a-9a51-3c1e2d4f5a6b/status"),
    }  # fmt: skip
    key = derive_record_key("node-0000", bytes(16))
    batch = 100
    print(f"bytes per request on the MQTT-SN link (token {len(device.token)} B; batch of {batch} records):")
    for name, (op, arg, body, method, _path) in cases.items():
        env = RequestEnvelope("r1", method, device.token, "application/json", json.dumps(body).encode())
        single = len(encode(Publish(topic_id=1, data=env.encode(), qos=1, msg_id=1)))
        records = [seal_record(key, 1000 + i, encode_request(op, arg, body)) for i in range(batch)]
        packed = BulkRequest("batch-1", records).encode()
        # one MQTT-SN PUBLISH per batch (a 100-record batch is larger than one datagram: the
        # root sends it in as many PUBLISHes as needed; each costs the same 7-byte header)
        per_record = len(packed) / batch + 7 / batch
        plain = len(encode_request(op, arg, body))
        print(f"  {name:<10} individual PUBLISH {single:4d} B   batched sealed record {per_record:6.1f} B "
              f"(plaintext {plain} B, overhead {per_record - plain:4.1f} B)")  # fmt: skip


def run(args: argparse.Namespace, tmp: Path, dbargs: list[str]) -> int:
    from bridge.server_cli import admin_main

    if admin_main(
        ["create-user", *dbargs, "--username", api_http.ADMIN[0], "--password", api_http.ADMIN[1]]
    ) not in (0, 1):
        return 2
    broker = start_mosquitto(tmp / "mosquitto")
    port = api_http.free_port()
    profile = ["-m", "pyinstrument", "-o", args.profile_server, "-r", "text"] if args.profile_server else []
    server = subprocess.Popen(
        [sys.executable, *profile, "-m", "bridge.server_cli", "--http", f"127.0.0.1:{port}", *dbargs,
         "--artifacts", str(tmp / "artifacts"), "--log-level", "warning", "--broker", broker.url],
        cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        asyncio.run(main_async(args, url, broker.port, tmp))
    finally:
        if args.profile_server:
            server.send_signal(signal.SIGINT)  # the profiler writes its report on a clean exit
        else:
            server.terminate()
        server.wait(timeout=30)
        broker.stop()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--db", default="", help="database URL (default: a temporary SQLite file)")
    p.add_argument("--only", choices=["http", "mqtt"], default=None, help="measure one path (profiling)")
    p.add_argument("--profile-server", default=None, metavar="FILE", help="run the server under pyinstrument")
    p.add_argument("--mqtt-connections", type=int, default=1, help="broker connections the devices share")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = args.db or f"sqlite:///{tmp / 'bench.sqlite'}"
        dbargs = ["--db", db]
        schema = None
        if db.startswith("postgresql"):
            schema = f"bench_{time.time_ns():x}"
            dbargs += ["--db-schema", schema]
        try:
            return run(args, tmp, dbargs)
        finally:
            if schema is not None:
                api_http.drop_schema(db, schema)


if __name__ == "__main__":
    sys.exit(main())
