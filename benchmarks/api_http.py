"""Device API over HTTP: N concurrent simulated devices doing auth -> inventory -> next -> status.

Starts ``meshota server`` (bridge.server_cli) as a subprocess on a free loopback port, enrolls
the devices and one deployment for all of them, then measures ``--rounds`` cycles per device.
This is the baseline the MQTT bridge must beat.

    .venv/bin/python benchmarks/api_http.py --devices 50 --rounds 5 [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


class Device:
    def __init__(self, index: int) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        pub = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        id_data = json.dumps({"mac": f"02:be:00:00:{index >> 8:02x}:{index & 255:02x}"})
        self.body = (json.dumps({"id_data": id_data, "pubkey": pub.decode()}) + "\n").encode()
        sig = self.key.sign(self.body, ec.ECDSA(hashes.SHA256()))
        self.sig = base64.b64encode(sig).decode()
        self.token = ""

    async def auth(self, c: httpx.AsyncClient) -> int:
        r = await c.post(f"{DEV}/authentication/auth_requests", content=self.body,
                         headers={"X-MEN-Signature": self.sig})  # fmt: skip
        if r.status_code == 200:
            self.token = r.text
        return r.status_code


async def cycle(c: httpx.AsyncClient, d: Device, lat: dict[str, list[float]]) -> None:
    async def timed(name: str, coro: object) -> httpx.Response:
        t0 = time.perf_counter()
        r: httpx.Response = await coro  # type: ignore[misc]
        lat[name].append(time.perf_counter() - t0)
        return r

    t0 = time.perf_counter()
    assert await d.auth(c) == 200
    lat["auth"].append(time.perf_counter() - t0)
    h = {"Authorization": f"Bearer {d.token}"}
    inv = [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]
    r = await timed("inventory", c.put(f"{DEV}/inventory/device/attributes", json=inv, headers=h))
    assert r.status_code == 200, r.text
    provides = {"device_provides": {"artifact_name": "v0", "device_type": "bench"}}
    r = await timed("next", c.post("/api/devices/v2/deployments/device/deployments/next",
                                   json=provides, headers=h))  # fmt: skip
    assert r.status_code == 200, r.text
    dep = r.json()["id"]
    r = await timed("status", c.put(f"{DEV}/deployments/device/deployments/{dep}/status",
                                    json={"status": "downloading"}, headers=h))  # fmt: skip
    assert r.status_code == 204, r.text


def make_artifact(tmp: Path) -> Path:
    (tmp / "f.txt").write_bytes(b"x" * 8192)
    out = tmp / "bench.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "single-file", "-t", "bench",
                    "-n", "v1", "-o", str(out), "-f", str(tmp / "f.txt")],
                   check=True, capture_output=True)  # fmt: skip
    return out


async def main_async(args: argparse.Namespace, url: str, tmp: Path) -> None:
    limits = httpx.Limits(max_connections=args.devices, max_keepalive_connections=args.devices)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        devices = [Device(i) for i in range(args.devices)]
        await asyncio.gather(*(d.auth(c) for d in devices))  # enrolls them as pending
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

        lat: dict[str, list[float]] = {k: [] for k in ("auth", "inventory", "next", "status")}

        async def run(d: Device) -> None:
            for _ in range(args.rounds):
                await cycle(c, d, lat)

        t0 = time.perf_counter()
        await asyncio.gather(*(run(d) for d in devices))
        elapsed = time.perf_counter() - t0
    everything = sorted(x for v in lat.values() for x in v)
    print(f"devices={args.devices} rounds={args.rounds} db={args.db or 'sqlite (temp file)'}")
    print(f"requests={len(everything)} elapsed={elapsed:.2f}s "
          f"throughput={len(everything) / elapsed:.0f} req/s")  # fmt: skip
    for name, values in [*lat.items(), ("all", everything)]:
        values = sorted(values)
        p50 = statistics.median(values) * 1000
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
        print(f"  {name:<10} n={len(values):<6} p50={p50:7.1f} ms  p99={p99:7.1f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--db", default="", help="database URL (default: a temporary SQLite file)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from bridge.server_cli import admin_main

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = args.db or f"sqlite:///{tmp / 'bench.sqlite'}"
        if admin_main(["create-user", "--db", db, "--username", ADMIN[0], "--password", ADMIN[1]]) not in (
            0,
            1,
        ):
            return 2
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bridge.server_cli", "--http", f"127.0.0.1:{port}",
             "--db", db, "--artifacts", str(tmp / "artifacts"), "--log-level", "warning"],
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
            asyncio.run(main_async(args, url, tmp))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
