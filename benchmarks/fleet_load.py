"""Scale-out under load: 10,000 MQTT-SN devices over UDP -> 2 gateways -> mosquitto -> 1, 2, 3
bridge workers (MQTT 5 shared subscription) -> one PostgreSQL.

Devices are the product's node code (benchmarks/device_load.py), split over ``--loaders``
processes that each multiplex their devices' UDP sockets; every device has its own socket, so
each gateway holds ~5,000 MQTT-SN sessions (aggregating mode). The devices are preauthorized
and one deployment targets them all; then, per worker count (1, 2, 3 in one run, the same
devices and sessions), device cycles auth -> inventory -> next -> status run open-loop at
``--rate`` requests/s for ``--seconds``. Printed per worker count: req/s, p50/p99, failed
requests, duplicates (replies a device got for a request it had already been answered, and
redeliveries the workers answered from the request log / reply cache instead of running them),
CPU per request of the workers (and of gateways, broker, PostgreSQL), requests per transaction
(group commit, read from the workers' /metrics), and PostgreSQL lock waits sampled every 100 ms
(``pg_locks`` not granted, ``pg_stat_activity`` wait_event_type Lock).

The baseline in the same run is 1 worker: the ratio printed is each row's CPU per request
against it. ``--netns``: the gateways run in network namespaces of their own, reached over veth
pairs (10.77.N.0/24), so nothing assumes loopback (needs root / CAP_NET_ADMIN).

    .venv/bin/python benchmarks/fleet_load.py --db postgresql://postgres@127.0.0.1/test \\
        --devices 10000 --loaders 4 --rate 200 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import api_http  # noqa: E402
from api_mqtt import cpu_seconds, percentiles  # noqa: E402

from meshota.broker import start_mosquitto  # noqa: E402

SHARE = "fleet"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start_worker(i: int, args: argparse.Namespace, tmp: Path, dbargs: list[str], broker: str) -> Any:
    port = api_http.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshota.cli.server",
            "--http",
            f"127.0.0.1:{port}",
            *dbargs,
            "--artifacts",
            str(tmp / "artifacts"),
            "--log-level",
            "warning",
            "--broker",
            broker,
            "--bridge-client-id",
            f"fleet-w{i}",
            "--share-group",
            SHARE,
            "--accept-unverified",
        ],
        cwd=ROOT,
        env=_env(),
    )
    url = f"http://127.0.0.1:{port}"
    if not api_http.wait_for_server(url, proc):
        raise RuntimeError(f"worker {i} did not start")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # ready: store answers (the bridge subscribed at startup)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        time.sleep(0.1)
    return proc, url


@contextlib.contextmanager
def namespaces(n: int) -> Iterator[list[tuple[str, str, str]]]:
    """(netns name, host-side address, namespace-side address) per gateway; removed at the end."""
    made = []

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    try:
        for i in range(n):
            ns, host_if, ns_if = f"fl-gw{i}", f"flh{i}", f"fln{i}"
            ip("netns", "add", ns)
            made.append((ns, host_if))
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            ip("link", "set", ns_if, "netns", ns)
            ip("addr", "add", f"10.77.{i}.1/24", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("netns", "exec", ns, "ip", "addr", "add", f"10.77.{i}.2/24", "dev", ns_if)
            ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield [(f"fl-gw{i}", f"10.77.{i}.1", f"10.77.{i}.2") for i in range(n)]
    finally:
        for ns, host_if in made:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_gateway(
    i: int, broker: str, listen_host: str, netns: str | None
) -> tuple[Any, tuple[str, int], str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "meshota",
            "gateway",
            "--broker",
            broker,
            "--udp",
            f"{listen_host}:0",
            "--mode",
            "aggregating",
            "--metrics",
            f"{listen_host}:0",
            # every simulated device comes from one or two hosts: lift the per-source keyless caps
            "--max-unverified-sessions",
            "50000",
            "--max-unverified-per-source",
            "50000",
            "--unverified-connect-rate",
            "5000",
            "--unverified-connect-rate-per-source",
            "5000",
            "--client-id",
            f"fleet-gw-{i}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    udp = re.search(r"udp (\S+):(\d+)", banner)
    metrics = re.search(r"metrics (http://\S+)/metrics", banner)
    if udp is None or metrics is None:
        raise RuntimeError(f"gateway did not start: {banner!r}")
    return proc, (udp.group(1), int(udp.group(2))), metrics.group(1)


class Loader:
    def __init__(self, gateways: list[tuple[str, int]], first: int, count: int, timeout: float) -> None:
        gws = ",".join(f"{h}:{p}" for h, p in gateways)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "device_load.py"),
                "--gateways",
                gws,
                "--first",
                str(first),
                "--count",
                str(count),
                "--timeout",
                str(timeout),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_env(),
        )

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a load process died")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask_all(loaders: list[Loader], cmd: dict[str, Any]) -> list[dict[str, Any]]:
        for loader in loaders:
            loader.send(cmd)
        return [loader.answer() for loader in loaders]


def metric_sum(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


class LockSampler:
    """Samples PostgreSQL lock waits every 100 ms in a thread of its own (own connection)."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("postgresql+asyncpg://", "postgresql://")
        self.samples = 0
        self.waiting_samples = 0
        self.max_not_granted = 0
        self.max_lock_waiters = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            while not self._stop.is_set():
                not_granted = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
                waiters = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                self.samples += 1
                self.waiting_samples += bool(not_granted or waiters)
                self.max_not_granted = max(self.max_not_granted, not_granted)
                self.max_lock_waiters = max(self.max_lock_waiters, waiters)
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
    return pids


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(pid)
    return total


async def enroll(url: str, devices: list[list[str]], tmp: Path) -> None:
    """Preauthorize every device."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        token = (await c.post("/api/management/v1/useradm/auth/login", auth=api_http.ADMIN)).text
        m = {"Authorization": f"Bearer {token}"}
        gate = asyncio.Semaphore(16)

        async def one(mac: str, pem: str) -> None:
            async with gate:
                r = await c.post(
                    "/api/management/v2/devauth/devices",
                    headers=m,
                    json={"identity_data": {"mac": mac}, "pubkey": pem},
                )
                assert r.status_code == 201, r.text

        await asyncio.gather(*(one(mac, pem) for mac, pem in devices))


async def deploy(url: str, tmp: Path) -> None:
    """One artifact, deployed to every (accepted) device."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        token = (await c.post("/api/management/v1/useradm/auth/login", auth=api_http.ADMIN)).text
        m = {"Authorization": f"Bearer {token}"}
        art = api_http.make_artifact(tmp)
        r = await c.post(
            "/api/management/v1/deployments/artifacts",
            headers=m,
            files={"artifact": (art.name, art.read_bytes())},
        )
        assert r.status_code == 201, r.text
        r = await c.post(
            "/api/management/v1/deployments/deployments",
            headers=m,
            json={"name": "fleet", "artifact_name": "v1", "all_devices": True},
        )
        assert r.status_code == 201, r.text


def run(args: argparse.Namespace, tmp: Path, dbargs: list[str]) -> int:
    from meshota.cli.server import admin_main

    os.environ["MESHOTA_BENCH_ADMIN_PASSWORD"] = api_http.ADMIN[1]
    user = ["--username", api_http.ADMIN[0], "--password-env", "MESHOTA_BENCH_ADMIN_PASSWORD"]
    if admin_main(["create-user", *dbargs, *user]) not in (0, 1):
        return 2
    extra_port = api_http.free_port()
    broker = start_mosquitto(
        tmp / "mosquitto", extra_conf=f"listener {extra_port} 0.0.0.0\n" if args.netns else ""
    )
    procs: list[Any] = []
    workers: list[tuple[Any, str]] = []
    loaders: list[Loader] = []
    stack = contextlib.ExitStack()
    try:
        ns = stack.enter_context(namespaces(2)) if args.netns else [(None, "127.0.0.1", "127.0.0.1")] * 2
        gateways = []
        gw_metrics = []
        for i, (netns, host_side, ns_side) in enumerate(ns):
            gw_broker = f"mqtt://{host_side}:{extra_port}" if netns else broker.url
            proc, addr, murl = start_gateway(i, gw_broker, ns_side, netns)
            procs.append(proc)
            gateways.append(addr)
            gw_metrics.append(murl)
        workers.append(start_worker(0, args, tmp, dbargs, broker.url))
        per = args.devices // args.loaders
        loaders = [
            Loader(gateways, k * per, per if k < args.loaders - 1 else args.devices - k * per, args.timeout)
            for k in range(args.loaders)
        ]
        keys = [pair for answer in Loader.ask_all(loaders, {"cmd": "keys"}) for pair in answer["devices"]]
        t0 = time.perf_counter()
        asyncio.run(enroll(workers[0][1], keys, tmp))
        print(f"preauthorized {len(keys)} devices in {time.perf_counter() - t0:.1f} s", flush=True)
        connects = Loader.ask_all(loaders, {"cmd": "connect"})
        t0 = time.perf_counter()
        auths = Loader.ask_all(loaders, {"cmd": "auth"})  # first auth: preauthorized -> accepted
        asyncio.run(deploy(workers[0][1], tmp))
        print(
            f"first auth of every device ({sum(a['ok'] for a in auths)} ok) and one deployment to all "
            f"in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        connected = sum(c["connected"] for c in connects)
        print(
            f"MQTT-SN sessions: {connected} connected, {sum(c['failed'] for c in connects)} failed, "
            f"{max(c['seconds'] for c in connects):.1f} s; gateways at "
            f"{', '.join(f'{h}:{p}' for h, p in gateways)}"
            f"{' (network namespaces, veth)' if args.netns else ''}",
            flush=True,
        )
        gw_pids = [p.pid for p in procs]
        rows = []
        for n in args.workers:
            while len(workers) < n:
                workers.append(start_worker(len(workers), args, tmp, dbargs, broker.url))
            time.sleep(1.0)
            urls = [u for _, u in workers]
            m0 = [
                (
                    metric_sum(u, "meshota_group_commit_size_sum"),
                    metric_sum(u, "meshota_group_commit_size_count"),
                    metric_sum(u, "meshota_duplicates_total"),
                    metric_sum(u, "meshota_requests_total"),
                )
                for u in urls
            ]
            wpids = [p.pid for p, _ in workers]
            # idle cost of the workers (keep-alives, LISTEN, lock polling, timers): subtracted below,
            # so that adding a process is not counted as per-request cost
            i0 = cpu_of(wpids)
            time.sleep(args.idle)
            idle_rate = (cpu_of(wpids) - i0) / args.idle  # CPU s per s, all workers
            c0 = (cpu_of(wpids), cpu_of(gw_pids), cpu_seconds(broker.proc.pid), cpu_of(postgres_pids()))
            with LockSampler(args.db) as locks:
                offered = args.rate * n if args.scale_rate else args.rate
                results = Loader.ask_all(
                    loaders, {"cmd": "run", "seconds": args.seconds, "rate": offered / len(loaders)}
                )
            c1 = (cpu_of(wpids), cpu_of(gw_pids), cpu_seconds(broker.proc.pid), cpu_of(postgres_pids()))
            m1 = [
                (
                    metric_sum(u, "meshota_group_commit_size_sum"),
                    metric_sum(u, "meshota_group_commit_size_count"),
                    metric_sum(u, "meshota_duplicates_total"),
                    metric_sum(u, "meshota_requests_total"),
                )
                for u in urls
            ]
            requests = sum(r["requests"] for r in results)
            lat = [x for r in results for v in r["latency_ms"].values() for x in v]
            elapsed = max(r["elapsed"] + r["drain"] for r in results)
            in_tx = sum(b[0] - a[0] for a, b in zip(m0, m1, strict=True))
            txs = sum(b[1] - a[1] for a, b in zip(m0, m1, strict=True))
            handled = [b[3] - a[3] for a, b in zip(m0, m1, strict=True)]
            rows.append(
                {
                    "workers": n,
                    "offered": offered,
                    "requests": requests,
                    "rate": requests / elapsed,
                    "p50": percentiles(lat)[0] / 1000 if lat else 0.0,
                    "p99": percentiles(lat)[1] / 1000 if lat else 0.0,
                    "failures": sum(r["failures"] for r in results),
                    "failed_ops": {
                        k: sum(r["failed_ops"].get(k, 0) for r in results)
                        for k in ("auth", "inventory", "next", "status")
                    },
                    "errors": {
                        k: sum(r["errors"].get(k, 0) for r in results) for r in results for k in r["errors"]
                    },
                    "stale": sum(r["stale_replies"] for r in results),
                    "retries": sum(r["retries"] for r in results),
                    "server_dups": sum(b[2] - a[2] for a, b in zip(m0, m1, strict=True)),
                    "cpu": [(b - a) / max(requests, 1) * 1000 for a, b in zip(c0, c1, strict=True)],
                    "net": (c1[0] - c0[0] - idle_rate * elapsed) / max(requests, 1) * 1000,
                    "idle": idle_rate * 1000 / n,
                    "per_tx": in_tx / txs if txs else 0.0,
                    "split": handled,
                    "locks": (
                        locks.samples,
                        locks.waiting_samples,
                        locks.max_not_granted,
                        locks.max_lock_waiters,
                    ),
                    "skipped": sum(r["skipped"] for r in results),
                }
            )
            row = rows[-1]
            print(f"{n} worker(s): {row['requests']} requests in {elapsed:.1f} s", flush=True)
        report(args, rows, connected)
    finally:
        for loader in loaders:
            with contextlib.suppress(Exception):
                loader.send({"cmd": "quit"})
        for loader in loaders:
            with contextlib.suppress(Exception):
                loader.proc.wait(20)
            if loader.proc.poll() is None:
                loader.proc.kill()
        for proc, _ in workers:
            proc.terminate()
        for proc in procs:
            proc.terminate()
        for proc in [p for p, _ in workers] + procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        stack.close()
        broker.stop()
    return 0


def report(args: argparse.Namespace, rows: list[dict[str, Any]], connected: int) -> None:
    print(
        f"\ndevices={args.devices} (sessions {connected}) loaders={args.loaders} "
        f"offered={args.rate:.0f} req/s{' per worker' if args.scale_rate else ''} "
        f"for {args.seconds:.0f} s per worker count; 2 gateways (aggregating), mosquitto, PostgreSQL "
        f"{'(gateways in network namespaces)' if args.netns else '(loopback)'}"
    )
    base = rows[0]["cpu"][0] or 1.0
    print(
        "workers  offered/req/s  p50 ms   p99 ms  failed        dup(client/server)  "
        "CPU ms/req: workers  gw   broker  pg"
        "   req/tx  ratio  net  ratio  idle  lock-wait samples  split"
    )
    base_net = rows[0]["net"] or 1.0
    for r in rows:
        cw, cg, cb, cp = r["cpu"]
        failed = f"{r['failures']}/{r['requests']} ({100 * r['failures'] / max(r['requests'], 1):.2f} %)"
        print(
            f"{r['workers']:>7}  {r['offered']:4.0f}/{r['rate']:4.0f}  {r['p50']:7.1f}  {r['p99']:7.1f}"
            f"  {failed:<19}"
            f"{r['stale']}/{r['server_dups']:<16} {cw:7.2f}  {cg:5.2f}  {cb:5.2f}  {cp:5.2f}"
            f"  {r['per_tx']:6.2f}"
            f"  {cw / base:5.2f}  {r['net']:4.2f}  {r['net'] / base_net:5.2f}  {r['idle']:4.1f}"
            f"  {r['locks'][1]}/{r['locks'][0]} "
            f"(max {r['locks'][2]} ungranted)  {[int(x) for x in r['split']]}"
        )
        if r["failures"]:
            print(f"         failed by call: {r['failed_ops']}  errors: {r['errors']}")
        if r["skipped"]:
            print(f"         cycles not started (every device busy): {r['skipped']}")
    print(
        "ratio: a row's worker CPU per request / the 1-worker row's (same run); net: the same with the "
        "workers' idle CPU (ms per s per worker, measured just before) subtracted; req/tx: requests per "
        "bridge transaction (group commit): at a fixed offered rate more workers commit smaller groups"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="postgresql://... (a fresh schema is created and dropped)")
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--loaders", type=int, default=4, help="load processes multiplexing the devices' sockets")
    p.add_argument("--rate", type=float, default=200.0, help="offered requests/s (all devices together)")
    p.add_argument("--seconds", type=float, default=30.0, help="measured time per worker count")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    p.add_argument("--timeout", type=float, default=10.0, help="device: seconds before re-sending a request")
    p.add_argument(
        "--scale-rate",
        action="store_true",
        help="offer --rate per worker (n workers: n x rate): equal load per worker in every row",
    )
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured per worker count")
    p.add_argument("--netns", action="store_true", help="gateways in network namespaces over veth pairs")
    args = p.parse_args()
    if not args.db.startswith("postgresql"):
        p.error("--db must be a PostgreSQL URL (several workers share it)")
    with api_http.bench_database(args.db) as (tmp, dbargs):
        return run(args, tmp, dbargs)


if __name__ == "__main__":
    sys.exit(main())
