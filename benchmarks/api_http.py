"""Device API over HTTP: N concurrent simulated devices doing auth -> inventory -> next -> status.

Starts ``meshota server`` (meshota.cli.server) as a subprocess on a free loopback port, enrolls
the devices and one deployment for all of them, then measures ``--rounds`` cycles per device.
This is the baseline the MQTT bridge must beat.

Baseline in the same run: the same client, concurrency and connections sending a request the
router answers without touching the database (404 on an unknown path). The ratio says how much
of the HTTP path's capacity (uvicorn + client + router) the device cycle reaches.

    .venv/bin/python benchmarks/api_http.py --devices 50 --rounds 5 [--db URL]

A PostgreSQL URL gets a fresh schema (``--db-schema`` of server and admin), dropped at the end.

``--compare-scoping``: what the permission checks and tenant scoping cost (issue 15). Two servers
in the same run, each on its own database: the real one and benchmarks/_unscoped_server.py (the
same code with the statement hook and ``authorize`` switched off); the same devices' cycles
alternate between them in ABBA order; prints server CPU per request of each and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
DEV = "/api/devices/v1"
ADMIN = ("bench@example.com", "bench-password")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RawConnection:
    """One keep-alive HTTP/1.1 connection per device, on asyncio streams.

    A device has its own connection; httpx's shared pool costs the client ~3 ms of CPU per
    request at 50 connections, which made the client, not the server, the measured thing.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        for key, value in (headers or {}).items():
            head += f"{key}: {value}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpxConnection:
    """The same interface over a shared httpx.AsyncClient (--client httpx)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        r = await self.client.request(method, path, content=body, headers=headers)
        return r.status_code, r.content

    def close(self) -> None:
        pass


Connection = RawConnection | HttpxConnection


class Device:
    def __init__(self, index: int, conn: Connection) -> None:
        self.conn = conn
        self.key = ec.generate_private_key(ec.SECP256R1())
        pub = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        id_data = json.dumps({"mac": f"02:be:00:00:{index >> 8:02x}:{index & 255:02x}"})
        self.body = (json.dumps({"id_data": id_data, "pubkey": pub.decode()}) + "\n").encode()
        sig = self.key.sign(self.body, ec.ECDSA(hashes.SHA256()))
        self.sig = base64.b64encode(sig).decode()
        self.token = ""

    async def auth(self) -> int:
        status, body = await self.conn.request(
            "POST", f"{DEV}/authentication/auth_requests", self.body, {"X-MEN-Signature": self.sig}
        )
        if status == 200:
            self.token = body.decode()
        return status


async def cycle(d: Device, lat: dict[str, list[float]], *, auth: bool = True) -> None:
    """One device round: auth (unless ``auth=False``: keep the token), inventory, next, status."""
    if auth or not d.token:
        t0 = time.perf_counter()
        assert await d.auth() == 200
        if "auth" in lat:
            lat["auth"].append(time.perf_counter() - t0)
    h = {"Authorization": f"Bearer {d.token}", "Content-Type": "application/json"}

    async def timed(name: str, method: str, path: str, body: object, expect: int) -> bytes:
        t0 = time.perf_counter()
        status, content = await d.conn.request(method, path, json.dumps(body).encode(), h)
        lat[name].append(time.perf_counter() - t0)
        assert status == expect, (name, status, content)
        return content

    inv = [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]
    await timed("inventory", "PUT", f"{DEV}/inventory/device/attributes", inv, 200)
    provides = {"device_provides": {"artifact_name": "v0", "device_type": "bench"}}
    content = await timed(
        "next", "POST", "/api/devices/v2/deployments/device/deployments/next", provides, 200
    )
    dep = json.loads(content)["id"]
    await timed(
        "status", "PUT", f"{DEV}/deployments/device/deployments/{dep}/status", {"status": "downloading"}, 204
    )


def make_artifact(tmp: Path) -> Path:
    (tmp / "f.txt").write_bytes(b"x" * 8192)
    out = tmp / "bench.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "single-file", "-t", "bench",
                    "-n", "v1", "-o", str(out), "-f", str(tmp / "f.txt")],
                   check=True, capture_output=True)  # fmt: skip
    return out


async def prepare(c: httpx.AsyncClient, devices: list[Device], tmp: Path) -> None:
    """Enrol and accept ``devices``, upload an artifact, deploy it to all of them."""
    await asyncio.gather(*(d.auth() for d in devices))  # enrolls them as pending
    token = (await c.post("/api/management/v1/useradm/auth/login", auth=ADMIN)).text
    m = {"Authorization": f"Bearer {token}"}
    listing = (await c.get("/api/management/v2/devauth/devices?per_page=500", headers=m)).json()
    for dev in listing:
        aid = dev["auth_sets"][0]["id"]
        await c.put(f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
                    json={"status": "accepted"}, headers=m)  # fmt: skip
    art = make_artifact(tmp)
    r = await c.post("/api/management/v1/deployments/artifacts", headers=m,
                     files={"artifact": (art.name, art.read_bytes())})  # fmt: skip
    assert r.status_code == 201, r.text
    r = await c.post("/api/management/v1/deployments/deployments", headers=m,
                     json={"name": "bench", "artifact_name": "v1", "all_devices": True})  # fmt: skip
    assert r.status_code == 201, r.text


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def compare_scoping(args: argparse.Namespace, stacks: dict[str, tuple[str, int]], tmp: Path) -> None:
    """``stacks``: variant -> (url, server pid). ABBA rounds of the same device cycle on each."""
    devices: dict[str, list[Device]] = {}
    for variant, (url, _pid) in stacks.items():
        host, port = url.rsplit("//", 1)[1].split(":")
        devices[variant] = [Device(i, RawConnection(host, int(port))) for i in range(args.devices)]
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            await prepare(c, devices[variant], tmp)
    cpu = dict.fromkeys(stacks, 0.0)
    count = dict.fromkeys(stacks, 0)
    elapsed = dict.fromkeys(stacks, 0.0)
    names = list(stacks)
    for rep in range(args.repeat * 2 + 1):  # the first round of each is a warm-up
        for variant in names if rep % 2 == 0 else names[::-1]:
            lat: dict[str, list[float]] = {k: [] for k in ("auth", "inventory", "next", "status")}
            pid = stacks[variant][1]
            c0, t0 = cpu_seconds(pid), time.perf_counter()

            async def run(d: Device, lat: dict[str, list[float]] = lat) -> None:
                for _ in range(args.rounds):
                    await cycle(d, lat)

            await asyncio.gather(*(run(d) for d in devices[variant]))
            if rep == 0:
                continue
            cpu[variant] += cpu_seconds(pid) - c0
            elapsed[variant] += time.perf_counter() - t0
            count[variant] += sum(len(v) for v in lat.values())
    for conns in devices.values():
        for d in conns:
            d.conn.close()
    db = args.db or "sqlite (temp files)"
    print(f"devices={args.devices} rounds={args.rounds} x {args.repeat * 2} (ABBA) db={db}")
    per = {v: cpu[v] / count[v] * 1e6 for v in stacks}
    for v in stacks:
        rate = count[v] / elapsed[v]
        print(f"  {v:<9} requests={count[v]:<6} {rate:6.0f} req/s  server CPU {per[v]:6.0f} us/request")
    extra = per["scoped"] / per["unscoped"] - 1
    print(f"permission checks + tenant scoping: {extra * 100:+.1f} % server CPU per request (target <= +5 %)")


async def main_async(args: argparse.Namespace, url: str, tmp: Path) -> None:
    limits = httpx.Limits(max_connections=args.devices, max_keepalive_connections=args.devices)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        host, port = url.rsplit("//", 1)[1].split(":")
        conns: list[Connection] = [
            RawConnection(host, int(port)) if args.client == "raw" else HttpxConnection(c)
            for _ in range(args.devices)
        ]
        devices = [Device(i, conn) for i, conn in enumerate(conns)]
        await prepare(c, devices, tmp)
        floor_lat: list[float] = []

        async def unrouted(d: Device) -> None:
            for _ in range(args.rounds * 4):
                t0 = time.perf_counter()
                status, _ = await d.conn.request("GET", "/api/devices/v1/no-such-endpoint")
                floor_lat.append(time.perf_counter() - t0)
                assert status == 404

        t0 = time.perf_counter()
        await asyncio.gather(*(unrouted(d) for d in devices))
        floor_elapsed = time.perf_counter() - t0

        lat: dict[str, list[float]] = {k: [] for k in ("auth", "inventory", "next", "status")}

        async def run(d: Device) -> None:
            for _ in range(args.rounds):
                await cycle(d, lat)

        t0 = time.perf_counter()
        await asyncio.gather(*(run(d) for d in devices))
        elapsed = time.perf_counter() - t0
        for conn in conns:
            conn.close()
    everything = sorted(x for v in lat.values() for x in v)
    db = args.db or "sqlite (temp file)"
    print(f"devices={args.devices} rounds={args.rounds} client={args.client} db={db}")
    throughput = len(everything) / elapsed
    floor = len(floor_lat) / floor_elapsed
    print(f"requests={len(everything)} elapsed={elapsed:.2f}s throughput={throughput:.0f} req/s")
    print(
        f"baseline (unrouted 404, no database, same run): {floor:.0f} req/s; "
        f"device cycle / baseline = {throughput / floor:.2f}"
    )
    for name, values in [*lat.items(), ("baseline", floor_lat), ("all", everything)]:
        values = sorted(values)
        p50 = statistics.median(values) * 1000
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
        print(f"  {name:<10} n={len(values):<6} p50={p50:7.1f} ms  p99={p99:7.1f} ms")


def wait_for_server(url: str, server: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """Poll ``url`` until the server answers; False if it exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url + "/", timeout=1)
            return True
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                return False
            time.sleep(0.1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--db", default="", help="database URL (default: a temporary SQLite file)")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="raw: a connection per device (default); httpx: one AsyncClient")  # fmt: skip
    p.add_argument("--compare-scoping", action="store_true",
                   help="server CPU/request with vs without permission checks + tenant scoping")  # fmt: skip
    p.add_argument("--repeat", type=int, default=2, help="--compare-scoping: measured runs per server (ABBA)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.compare_scoping:
        with bench_database(args.db) as (tmp_a, dbargs_a), bench_database(args.db) as (tmp_b, dbargs_b):
            return run_compare(args, {"scoped": (tmp_a, dbargs_a), "unscoped": (tmp_b, dbargs_b)})
    with bench_database(args.db) as (tmp, dbargs):
        return run_with_db(args, tmp, dbargs)


@contextlib.contextmanager
def bench_database(url: str) -> Iterator[tuple[Path, list[str]]]:
    """(temporary directory, server/admin database arguments): ``url`` or a temporary SQLite file;
    a PostgreSQL URL gets a fresh schema, dropped at the end."""
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = url or f"sqlite:///{tmp / 'bench.sqlite'}"
        dbargs = ["--db", db]
        schema = None
        if db.startswith("postgresql"):
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            dbargs += ["--db-schema", schema]
        try:
            yield tmp, dbargs
        finally:
            if schema is not None:
                drop_schema(db, schema)


def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(run())


def run_with_db(args: argparse.Namespace, tmp: Path, dbargs: list[str]) -> int:
    from meshota.cli.server import admin_main

    os.environ["MESHOTA_BENCH_ADMIN_PASSWORD"] = ADMIN[1]  # secrets never in argv
    argv = ["create-user", *dbargs, "--username", ADMIN[0], "--password-env", "MESHOTA_BENCH_ADMIN_PASSWORD"]
    if admin_main(argv) not in (0, 1):
        return 2
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "meshota.cli.server", "--http", f"127.0.0.1:{port}",
         *dbargs, "--artifacts", str(tmp / "artifacts"), "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_server(url, server):
            print("server did not start", file=sys.stderr)
            return 1
        asyncio.run(main_async(args, url, tmp))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


def start_server(
    tmp: Path, dbargs: list[str], *, unscoped: bool = False, extra: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str] | None:
    """Admin user, then ``meshota server`` (or its unscoped twin) on a free port; None if it fails."""
    from meshota.cli.server import admin_main

    os.environ["MESHOTA_BENCH_ADMIN_PASSWORD"] = ADMIN[1]  # secrets never in argv
    argv = ["create-user", *dbargs, "--username", ADMIN[0], "--password-env", "MESHOTA_BENCH_ADMIN_PASSWORD"]
    if admin_main(argv) not in (0, 1):
        return None
    port = free_port()
    launcher = (
        [str(ROOT / "benchmarks" / "_unscoped_server.py")] if unscoped else ["-m", "meshota.cli.server"]
    )
    server = subprocess.Popen(
        [sys.executable, *launcher, "--http", f"127.0.0.1:{port}",
         *dbargs, "--artifacts", str(tmp / "artifacts"), "--log-level", "warning", *(extra or [])],
        cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if not wait_for_server(url, server):
        server.terminate()
        return None
    return server, url


def run_compare(args: argparse.Namespace, dbs: dict[str, tuple[Path, list[str]]]) -> int:
    servers: dict[str, subprocess.Popen[bytes]] = {}
    stacks: dict[str, tuple[str, int]] = {}
    try:
        for variant, (tmp, dbargs) in dbs.items():
            started = start_server(tmp, dbargs, unscoped=variant == "unscoped")
            if started is None:
                print(f"{variant} server did not start", file=sys.stderr)
                return 1
            servers[variant], url = started
            stacks[variant] = (url, started[0].pid)
        asyncio.run(compare_scoping(args, stacks, dbs["scoped"][0]))
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
