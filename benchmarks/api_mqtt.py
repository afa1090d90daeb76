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

``--compare-scoping``: what the permission checks and tenant scoping cost on the MQTT path
(issue 15): two stacks in the same run (each its own mosquitto, database and ``meshota server
--broker``: the real server and benchmarks/_unscoped_server.py), the same MQTT device cycles
alternating between them in ABBA order; prints server CPU per request of each and the ratio.

``--compare-tenant-topics``: what organisations' topics cost (docs/topics.md, "Organisations"):
two stacks of the real server in the same run, one with its devices in the default organisation
on ``/mender/api/...``, one with them in an organisation (``meshota admin create-org``) on
``/mender/t/{org}/api/...``, answered on ``/mender/t/{org}/responses/...``; ABBA as above.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import api_http  # noqa: E402

from bridge.mqtt5 import ConnectOptions, Mqtt5Client, PublishIn, encode_user_properties  # noqa: E402
from meshota.broker import start_mosquitto  # noqa: E402
from wire.envelope import (  # noqa: E402
    BULK_TOPIC,
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
    BulkReply,
    BulkRequest,
    RequestEnvelope,
    ResponseEnvelope,
    request_topic,
)
from wire.sealed import (  # noqa: E402
    TO_NODE,
    RecordKey,
    RecordOp,
    decode_reply,
    derive_record_key,
    encode_request,
    open_record,
    seal_record,
)
from wire.tenant_topics import tenant_topic  # noqa: E402

_PASSED = {"x-men-signature": "x-men-signature", "range": "range"}


class LeanMqttLink:
    """The load generator's broker connection: the MQTT twin of api_http.RawConnection.

    One connection carrying many devices' requests (the aggregating gateway's shape), on the same
    lean MQTT 5 client the bridge uses (bridge.mqtt.Mqtt5Client). Requests go out at QoS 1 with the
    gateway's two user properties (encoded once per device); each reply resolves the future
    waiting on its topic. It costs about what the raw HTTP client costs (printed per run).
    """

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[bytes]] = {}
        self.stamps: dict[str, bytes] = {}
        self.client: Mqtt5Client | None = None

    @classmethod
    async def connect(cls, port: int, client_id: str) -> LeanMqttLink:
        link = cls()
        link.client, _ = await Mqtt5Client.connect("127.0.0.1", port, ConnectOptions(client_id), link._reply)
        await link.client.subscribe([("/mender/responses/#", 1), ("/mender/t/+/responses/#", 1)])
        return link

    def _reply(self, message: PublishIn) -> None:
        fut = self.waiting.pop(message.topic, None)
        if fut is not None and not fut.done():
            fut.set_result(message.payload)

    def publish(self, topic: str, payload: bytes, device: str) -> None:
        stamp = self.stamps.get(device)
        if stamp is None:
            stamp = self.stamps[device] = encode_user_properties(
                [(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1")]
            )
        assert self.client is not None
        self.client.publish(topic, payload, 1, stamp)  # its PUBACK is only counted

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class MqttConnection:
    """api_http's connection interface (request -> (status, body)) over the MQTT bridge."""

    _ids = itertools.count(1)

    def __init__(self, link: LeanMqttLink, device: str, tenant: str | None = None) -> None:
        self.link, self.device = link, device
        self.tenant = tenant  # an organisation's topics (wire/tenant_topics.py); None: the default

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
        self.link.waiting[tenant_topic(f"/mender/responses/{self.device}/{rid}", self.tenant)] = fut
        self.link.publish(tenant_topic(request_topic(path), self.tenant), env.encode(), self.device)
        reply = ResponseEnvelope.decode(await asyncio.wait_for(fut, 60))
        return reply.status, reply.body

    def close(self) -> None:
        pass


class BulkRoot:
    """A root batching its children's sealed records (inventory, next, status) into bulk PUBLISHes.

    The root only forwards records it cannot open; each node seals with its own record key (the
    loadgen plays the nodes too, so sealing and opening count as load-generator CPU).
    """

    def __init__(self, link: LeanMqttLink, name: str, nodes: list[tuple[str, RecordKey]], batch: int) -> None:
        self.link, self.name, self.nodes, self.batch = link, name, nodes, batch
        self.seq = {node: 1 for node, _ in nodes}
        self.keys = dict(nodes)
        self.batches = itertools.count(1)
        self.batch_latency: list[float] = []

    async def exchange(self, records: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
        """Seal ``(node, plaintext)`` records, send them in batches, open the sealed answers."""
        sealed, seqs = [], []
        for node, plain in records:
            seq = self.seq[node]
            self.seq[node] = seq + 1
            seqs.append(seq)
            sealed.append(seal_record(self.keys[node], seq, plain))
        entries: list[bytes | int] = []
        for start in range(0, len(sealed), self.batch):
            batch_id = f"k{next(self.batches)}"
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.link.waiting[f"/mender/responses/{self.name}/{batch_id}"] = fut
            t0 = time.perf_counter()
            self.link.publish(BULK_TOPIC, BulkRequest(batch_id, sealed[start : start + self.batch]).encode(),
                              self.name)  # fmt: skip
            reply = BulkReply.decode(await asyncio.wait_for(fut, 60))
            self.batch_latency.append(time.perf_counter() - t0)
            assert reply.status == 200, reply.status
            entries.extend(reply.entries)
        out = []
        for (node, _), seq, entry in zip(records, seqs, entries, strict=True):
            assert isinstance(entry, bytes), f"record refused: {entry}"
            _key, got, plain = open_record([self.keys[node]], entry, direction=TO_NODE)
            assert got == seq
            out.append(decode_reply(plain))
        return out

    async def cycle(self) -> int:
        """inventory + next for every node in one go, then status for those with a deployment."""
        inv = [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]
        provides = {"device_provides": {"artifact_name": "v0", "device_type": "bench"}}
        first = []
        for node, _ in self.nodes:
            first.append((node, encode_request(RecordOp.INVENTORY_PUT, "", inv)))
            first.append((node, encode_request(RecordOp.NEXT, "", provides)))
        answers = await self.exchange(first)
        status = []
        for (node, _), inv_reply, next_reply in zip(self.nodes, answers[::2], answers[1::2], strict=True):
            assert inv_reply[0] == 200 and next_reply[0] == 200, (inv_reply, next_reply)
            dep = json.loads(next_reply[1])["id"]
            status.append((node, encode_request(RecordOp.STATUS, dep, {"status": "downloading"})))
        assert all(code == 204 for code, _ in await self.exchange(status))
        return len(first) + len(status)


async def measure_bulk(
    roots: list[BulkRoot], rounds: int, pids: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """(records/s, CPU seconds per process) for ``rounds`` cycles of every root, all roots at once."""

    async def run(root: BulkRoot) -> int:
        return sum([await root.cycle() for _ in range(rounds)])

    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    records = sum(await asyncio.gather(*(run(r) for r in roots)))
    elapsed = time.perf_counter() - t0
    cpu = {name: (cpu_seconds(pid) - cpu0[name]) / records for name, pid in pids.items()}
    return records / elapsed, cpu


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values) * 1000, values[min(len(values) - 1, int(len(values) * 0.99))] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    devices: list[api_http.Device], rounds: int, pids: dict[str, int], *, with_auth: bool = True
) -> tuple[float, list[float], dict[str, Any], dict[str, float]]:
    """(requests/s, all latencies, latencies by call, CPU seconds per process during the run)."""
    lat: dict[str, list[float]] = {k: [] for k in ("auth", "inventory", "next", "status")}
    if not with_auth:
        del lat["auth"]

    async def run(d: api_http.Device) -> None:
        for _ in range(rounds):
            await api_http.cycle(d, lat, auth=with_auth)

    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    await asyncio.gather(*(run(d) for d in devices))
    elapsed = time.perf_counter() - t0
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    everything = [x for v in lat.values() for x in v]
    return len(everything) / elapsed, everything, lat, cpu


async def main_async(
    args: argparse.Namespace, url: str, broker_port: int, tmp: Path, pids: dict[str, int]
) -> None:
    host, port = url.rsplit("//", 1)[1].split(":")
    n = args.devices
    links = [await LeanMqttLink.connect(broker_port, f"bench-gw-{i}") for i in range(args.mqtt_connections)]
    http_devices = [api_http.Device(i, api_http.RawConnection(host, int(port))) for i in range(n)]
    mqtt_devices = [
        api_http.Device(4096 + i, MqttConnection(links[i % len(links)], f"node-{i:04d}")) for i in range(n)
    ]  # type: ignore[arg-type]
    bulk_devices = [
        api_http.Device(8192 + i, MqttConnection(links[i % len(links)], bulk_node(i))) for i in range(n)
    ]  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        # enroll all sets (pending), over their own transport: MQTT binds node-i to its device
        await asyncio.gather(*(d.auth() for d in http_devices + mqtt_devices + bulk_devices))
        token = (await c.post("/api/management/v1/useradm/auth/login", auth=api_http.ADMIN)).text
        m = {"Authorization": f"Bearer {token}"}
        listing = (await c.get("/api/management/v2/devauth/devices?per_page=500", headers=m)).json()
        assert len(listing) == 3 * n, len(listing)
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
    paths = {"http": http_devices, "mqtt": mqtt_devices}
    for name, devs in paths.items():
        if not args.only or name == args.only:
            await measure(devs, 1, pids)  # warm-up round (first next/status of the deployment)
    # ABBA order (http, mqtt, mqtt, http, ...): a database that grows or a neighbour that gets
    # busy during the run weighs on both paths alike; rates = all requests / all measured time
    runs: dict[str, list[tuple[float, list[float], dict[str, Any], dict[str, float]]]] = {}
    for rep in range(args.repeat if args.only != "bulk" else 0):
        for name in ("http", "mqtt") if rep % 2 == 0 else ("mqtt", "http"):
            if not args.only or name == args.only:
                runs.setdefault(name, []).append(await measure(paths[name], args.rounds, pids))
    results = {}
    for name, parts in runs.items():
        lat = {op: [x for part in parts for x in part[2][op]] for op in parts[0][2]}
        everything = [x for part in parts for x in part[1]]
        elapsed = sum(len(part[1]) / part[0] for part in parts)
        cpu = {k: sum(part[3][k] for part in parts) for k in parts[0][3]}
        results[name] = (len(everything) / elapsed, everything, lat, cpu)
    bulk = None
    if not args.only or args.only == "bulk":
        # each bulk node authenticates once over its own stamped session (binds the token its
        # sealed records run with); then roots batch their sealed records
        assert all(code == 200 for code in await asyncio.gather(*(d.auth() for d in bulk_devices)))
        nodes = [(bulk_node(i), derive_record_key(bulk_node(i), bulk_psk(i))) for i in range(n)]
        roots = [
            BulkRoot(links[k % len(links)], f"root-{k}", nodes[k :: args.bulk_roots], args.batch)
            for k in range(args.bulk_roots)
        ]
        await measure_bulk(roots, 1, pids)  # warm-up (first next of the deployment)
        for root in roots:
            root.batch_latency.clear()
        # its fair HTTP baseline: the same three operations per device and round (inventory, next,
        # status) with the token the device already holds, ABBA-interleaved with the bulk runs
        bulk_parts: list[tuple[float, dict[str, float]]] = []
        same_ops: list[tuple[float, list[float], dict[str, Any], dict[str, float]]] = []
        for rep in range(args.repeat):
            for name in ("http3", "bulk") if rep % 2 == 0 else ("bulk", "http3"):
                if name == "bulk":
                    bulk_parts.append(await measure_bulk(roots, args.rounds, pids))
                elif args.only != "bulk":  # --only bulk: no baseline (profiling the bulk path)
                    same_ops.append(await measure(http_devices, args.rounds, pids, with_auth=False))
        records = args.rounds * 3 * n * len(bulk_parts)
        elapsed = sum(args.rounds * 3 * n / rate for rate, _ in bulk_parts)
        cpu_bulk = {k: sum(c[k] for _, c in bulk_parts) / len(bulk_parts) for k in bulk_parts[0][1]}
        http3_all = [x for part in same_ops for x in part[1]]
        http3_elapsed = sum(len(part[1]) / part[0] for part in same_ops)
        http3_cpu = {k: sum(p[3][k] for p in same_ops) / len(http3_all) for k in pids} if same_ops else {}
        bulk = (
            (records / elapsed, cpu_bulk),
            [x for r in roots for x in r.batch_latency],
            (len(http3_all) / http3_elapsed if same_ops else 0.0, http3_all or [0.0], http3_cpu),
        )
    for d in http_devices:
        d.conn.close()
    for link in links:
        link.close()

    print(f"devices={n} rounds={args.rounds} x {args.repeat} (ABBA) db={args.db or 'sqlite (temp file)'} "
          f"mqtt connections={args.mqtt_connections} "
          f"(requests QoS 1, replies QoS {args.reply_qos})")  # fmt: skip
    for name, (rate, everything, lat, cpu) in results.items():
        p50, p99 = percentiles(everything)
        print(
            f"{name:<5} requests={len(everything):<6} {rate:7.0f} req/s  p50={p50:6.1f} ms  p99={p99:6.1f} ms"
        )
        per_request = "  ".join(f"{k} {v / len(everything) * 1e6:4.0f}" for k, v in cpu.items())
        print(f"        CPU us/request: {per_request}")
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
    if bulk is not None:
        (records_rate, cpu), batch_lat, (h3_rate, h3_lat, h3_cpu) = bulk
        b50, b99 = percentiles(batch_lat)
        h50, h99 = percentiles(h3_lat)
        print(f"bulk sealed records (how MQTT-SN nodes report through their root): {args.bulk_roots} roots x "
              f"{n // args.bulk_roots} nodes, inventory+next then status per node per round, "
              f"<= {args.batch} records per batch; baseline: HTTP devices doing the same three calls "
              f"with the token they hold, ABBA-interleaved")  # fmt: skip
        print(f"http3 {h3_rate:7.0f} req/s      p50={h50:6.1f} ms  p99={h99:6.1f} ms")
        print("        CPU us/request: " + "  ".join(f"{k} {v * 1e6:4.0f}" for k, v in h3_cpu.items()))
        print(f"bulk  {records_rate:7.0f} records/s  batch p50={b50:6.1f} ms  p99={b99:6.1f} ms")
        print("        CPU us/record: " + "  ".join(f"{k} {v * 1e6:4.0f}" for k, v in cpu.items()))
        if not h3_rate:
            return
        verdict = "met" if records_rate >= 1.5 * h3_rate and b99 <= h99 else "NOT met"
        print(f"bulk MQTT / HTTP (same operations) = {records_rate / h3_rate:.2f} (p99 {b99:.1f} vs "
              f"{h99:.1f} ms); target >= 1.5 at equal p99: {verdict}")  # fmt: skip
    print_link_bytes(mqtt_devices[0])


def bulk_node(i: int) -> str:
    return f"bulk-{i:04d}"


def bulk_psk(i: int) -> bytes:
    return hashlib.sha256(bulk_node(i).encode()).digest()[:16]


def print_link_bytes(device: api_http.Device) -> None:
    """Encoded bytes on the MQTT-SN link: one PUBLISH per request vs one sealed record in a batch."""
    import json

    from mqttsn import Publish
    from mqttsn._codec import encode
    from wire.sealed import RecordOp, derive_record_key, encode_request, seal_record

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
    from meshota.cli.server import admin_main

    os.environ["MESHOTA_BENCH_ADMIN_PASSWORD"] = api_http.ADMIN[1]  # secrets never in argv
    user = ["--username", api_http.ADMIN[0], "--password-env", "MESHOTA_BENCH_ADMIN_PASSWORD"]
    if admin_main(["create-user", *dbargs, *user]) not in (0, 1):
        return 2
    psk_file = tmp / "psk.txt"  # the bulk nodes' provisioning: their sealed-record keys derive from it
    psk_file.write_text("".join(f"{bulk_node(i)},{bulk_psk(i).hex()}\n" for i in range(args.devices)))
    broker = start_mosquitto(tmp / "mosquitto")
    port = api_http.free_port()
    profile = []
    if args.profile_server:  # pstats for a flat view (python -m pstats FILE), else pyinstrument's tree
        renderer = "pstats" if args.profile_server.endswith(".prof") else "text"
        profile = ["-m", "pyinstrument", "-o", args.profile_server, "-r", renderer]
    server = subprocess.Popen(
        [sys.executable, *profile, "-m", "meshota.cli.server", "--http", f"127.0.0.1:{port}", *dbargs,
         "--artifacts", str(tmp / "artifacts"), "--log-level", "warning", "--broker", broker.url,
         "--psk-file", str(psk_file), "--reply-qos", str(args.reply_qos)],
        cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        if not api_http.wait_for_server(url, server):
            print("server did not start", file=sys.stderr)
            return 1
        pids = {"server": server.pid, "broker": broker.proc.pid, "loadgen": os.getpid()}
        asyncio.run(main_async(args, url, broker.port, tmp, pids))
    finally:
        if args.profile_server:
            server.send_signal(signal.SIGINT)  # the profiler writes its report on a clean exit
        else:
            server.terminate()
        server.wait(timeout=30)
        broker.stop()
    return 0


async def compare_async(
    args: argparse.Namespace,
    stacks: dict[str, tuple[str, int, int]],
    tmp: Path,
    tenants: dict[str, str] | None = None,
) -> None:
    """``stacks``: variant -> (HTTP url, broker port, server pid); ``tenants``: variant -> the
    organisation whose topics its devices use."""
    devices: dict[str, list[api_http.Device]] = {}
    links: list[LeanMqttLink] = []
    for variant, (url, broker_port, _pid) in stacks.items():
        link = await LeanMqttLink.connect(broker_port, f"bench-gw-{variant}")
        links.append(link)
        org = (tenants or {}).get(variant)
        devices[variant] = [api_http.Device(4096 + i, MqttConnection(link, f"node-{i:04d}", org))  # type: ignore[arg-type]
                            for i in range(args.devices)]  # fmt: skip
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            await api_http.prepare(c, devices[variant], tmp)
    totals: dict[str, list[float]] = {v: [0.0, 0.0, 0.0] for v in stacks}  # requests, seconds, CPU
    names = list(stacks)
    for rep in range(args.repeat * 2 + 1):  # the first round of each is a warm-up
        for variant in names if rep % 2 == 0 else names[::-1]:
            pids = {"server": stacks[variant][2]}
            rate, everything, _lat, cpu = await measure(devices[variant], args.rounds, pids)
            if rep:
                totals[variant][0] += len(everything)
                totals[variant][1] += len(everything) / rate
                totals[variant][2] += cpu["server"]
    for link in links:
        link.close()
    db = args.db or "sqlite (temp files)"
    print(f"devices={args.devices} rounds={args.rounds} x {args.repeat * 2} (ABBA) over MQTT "
          f"(requests QoS 1, replies QoS {args.reply_qos}) db={db}")  # fmt: skip
    per = {v: t[2] / t[0] * 1e6 for v, t in totals.items()}
    for v, (n, secs, _cpu) in totals.items():
        print(f"  {v:<9} requests={n:<6.0f} {n / secs:6.0f} req/s  server CPU {per[v]:6.0f} us/request")
    if tenants:
        extra = per["org-topics"] / per["default"] - 1
        print(f"organisation topics: {extra * 100:+.1f} % server CPU per request (target <= +5 %)")
        return
    extra = per["scoped"] / per["unscoped"] - 1
    print(f"permission checks + tenant scoping: {extra * 100:+.1f} % server CPU per request (target <= +5 %)")


def _bench_org(dbargs: list[str]) -> str:
    """An organisation with the benchmark's admin in it (before start_server's default one); its id."""
    import contextlib
    import io

    from meshota.cli.server import admin_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert admin_main(["create-org", *dbargs, "bench-org"]) == 0
    org = out.getvalue().split(": id ", 1)[1].split()[0]
    os.environ["MESHOTA_BENCH_ADMIN_PASSWORD"] = api_http.ADMIN[1]
    user = ["--username", api_http.ADMIN[0], "--password-env", "MESHOTA_BENCH_ADMIN_PASSWORD"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert admin_main(["create-user", *dbargs, "--org", "bench-org", *user]) == 0
    return org


def run_compare(args: argparse.Namespace, dbs: dict[str, tuple[Path, list[str]]]) -> int:
    servers: list[subprocess.Popen[bytes]] = []
    brokers = []
    stacks: dict[str, tuple[str, int, int]] = {}
    tenants = {"org-topics": _bench_org(dbs["org-topics"][1])} if "org-topics" in dbs else None
    try:
        for variant, (tmp, dbargs) in dbs.items():
            broker = start_mosquitto(tmp / "mosquitto")
            brokers.append(broker)
            extra = ["--broker", broker.url, "--reply-qos", str(args.reply_qos)]
            started = api_http.start_server(tmp, dbargs, unscoped=variant == "unscoped", extra=extra)
            if started is None:
                print(f"{variant} server did not start", file=sys.stderr)
                return 1
            servers.append(started[0])
            stacks[variant] = (started[1], broker.port, started[0].pid)
        asyncio.run(compare_async(args, stacks, next(iter(dbs.values()))[0], tenants))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        for broker in brokers:
            broker.stop()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--db", default="", help="database URL (default: a temporary SQLite file)")
    p.add_argument("--only", choices=["http", "mqtt", "bulk"], default=None, help="measure one path")
    p.add_argument("--profile-server", default=None, metavar="FILE", help="run the server under pyinstrument")
    p.add_argument("--reply-qos", type=int, choices=(0, 1), default=1, help="the bridge's --reply-qos")
    p.add_argument("--repeat", type=int, default=2, help="measured runs per path, in ABBA order")
    p.add_argument("--bulk-roots", type=int, default=2, help="roots batching sealed records (bulk line)")
    p.add_argument("--batch", type=int, default=100, help="most sealed records per bulk PUBLISH")
    p.add_argument("--mqtt-connections", type=int, default=1, help="broker connections the devices share")
    p.add_argument("--compare-scoping", action="store_true",
                   help="server CPU/request with vs without permission checks + tenant scoping")  # fmt: skip
    p.add_argument("--compare-tenant-topics", action="store_true",
                   help="server CPU/request: an organisation's devices on its topics vs default")  # fmt: skip
    args = p.parse_args()
    if args.compare_tenant_topics:
        with api_http.bench_database(args.db) as a, api_http.bench_database(args.db) as b:
            return run_compare(args, {"default": a, "org-topics": b})
    if args.compare_scoping:
        with api_http.bench_database(args.db) as a, api_http.bench_database(args.db) as b:
            return run_compare(args, {"scoped": a, "unscoped": b})
    with api_http.bench_database(args.db) as (tmp, dbargs):
        return run(args, tmp, dbargs)


if __name__ == "__main__":
    sys.exit(main())
