"""Remote access through meshota with the real mender-connect 2.1: what the relay costs.

Shell: 50 ``echo`` round trips (command sent → its output seen) through the server's relay and
mender-connect's bash, against the same 50 through a bash on a local pseudo-terminal (baseline,
same run). Files: ``mender-cli cp`` of a 16 MiB file up and down through the HTTP file routes,
against a local ``cp`` of it. Server on SQLite; mender-client 3.4 + mender-connect on a private
D-Bus system bus (tests/support/mender_connect.py); needs root and the Debian packages.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/remote_access.py [--size-mib 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import msgpack
from websockets.asyncio.client import connect

from tests.support.mender import Db, admin_token, require_binary, start_server
from tests.support.mender_connect import start_device_host

ROUNDS = 50


def _msg(typ: str, body: bytes = b"", props: dict[str, int] | None = None) -> bytes:
    hdr: dict[str, object] = {"proto": 1, "typ": typ}
    if props:
        hdr["props"] = props
    return bytes(msgpack.packb({"hdr": hdr, "body": body}, use_bin_type=True))


async def _relay_rtts(url: str, token: str) -> list[float]:
    async def until(ws: object, needle: bytes) -> None:
        seen = b""
        while needle not in seen:
            doc = msgpack.unpackb(await ws.recv(), raw=False)  # type: ignore[attr-defined]
            if doc["hdr"].get("typ") == "shell":
                seen += doc.get("body") or b""

    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(_msg("new", props={"terminal_width": 80, "terminal_height": 24}))
        await ws.send(_msg("shell", b"echo ready-$((1+1))\n"))
        await asyncio.wait_for(until(ws, b"ready-2"), 60)
        out = []
        for i in range(ROUNDS):
            t0 = time.perf_counter()
            await ws.send(_msg("shell", f"echo r{i}-$((1+{i}))\n".encode()))
            await asyncio.wait_for(until(ws, f"r{i}-{1 + i}".encode()), 30)
            out.append(time.perf_counter() - t0)
        return out


def _local_rtts() -> list[float]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(["/bin/bash", "--norc", "-i"], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)

    def until(needle: bytes) -> None:
        seen = b""
        while needle not in seen:
            select.select([master], [], [], 5)
            seen += os.read(master, 65536)

    try:
        os.write(master, b"echo ready-$((1+1))\n")
        until(b"ready-2")
        out = []
        for i in range(ROUNDS):
            t0 = time.perf_counter()
            os.write(master, f"echo r{i}-$((1+{i}))\n".encode())
            until(f"r{i}-{1 + i}".encode())
            out.append(time.perf_counter() - t0)
        return out
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = start_server(Db(f"sqlite:///{tmp / 'db.sqlite'}", None, "sqlite"), tmp)
        host = None
        try:
            token = admin_token(server)
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            mac = "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])
            host = start_device_host(tmp / "device", server.url, mac)
            deadline = time.monotonic() + 60
            while not (devices := api.get("/api/management/v2/devauth/devices").json()):
                if time.monotonic() > deadline:
                    raise SystemExit("mender-client never asked to be accepted")
                time.sleep(0.3)
            dev = devices[0]
            aid = dev["auth_sets"][0]["id"]
            api.put(
                f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
                json={"status": "accepted"},
            )
            share = tmp / "share"
            share.mkdir()
            share.chmod(0o777)
            host.start_connect({"ShellCommand": "/bin/bash", "User": "nobody"})
            while dev["id"] not in server.context.remote.devices:
                if time.monotonic() > deadline + 60:
                    raise SystemExit("mender-connect never connected")
                time.sleep(0.3)
            api.put(f"/api/meshota/v1/management/remote_access/devices/{dev['id']}", json={"duration": 3600})
            ws = (
                server.url.replace("http://", "ws://")
                + f"/api/management/v1/deviceconnect/devices/{dev['id']}/connect"
            )
            relay = asyncio.run(_relay_rtts(ws, token))
            local = _local_rtts()
            r_med, l_med = statistics.median(relay), statistics.median(local)
            p90 = sorted(relay)[int(ROUNDS * 0.9)]
            print(
                f"shell round trip, {ROUNDS} echoes: relay median {r_med * 1e3:.2f} ms "
                f"(p90 {p90 * 1e3:.2f}), "
                f"local pty median {l_med * 1e3:.2f} ms; ratio {r_med / l_med:.1f}x"
            )
            time.sleep(6)  # mender-connect stops the closed shell synchronously before it serves more
            big = tmp / "big.bin"
            big.write_bytes(os.urandom(args.size_mib << 20))
            t0 = time.perf_counter()
            subprocess.run(["cp", str(big), str(tmp / "copy.bin")], check=True)
            local_cp = time.perf_counter() - t0
            cli = [require_binary("mender-cli"), "--server", server.url, "--token-value", token]
            for label, cp_args in (
                ("upload", ["cp", str(big), f"{dev['id']}:{share}/big.bin"]),
                ("download", ["cp", f"{dev['id']}:{share}/big.bin", str(tmp / "back.bin")]),
            ):
                t0 = time.perf_counter()
                subprocess.run([*cli, *cp_args], check=True, capture_output=True, timeout=600)
                took = time.perf_counter() - t0
                rate = args.size_mib / took
                print(
                    f"mender-cli cp {label} {args.size_mib} MiB: {took:.2f} s = {rate:.1f} MiB/s "
                    f"(local cp {local_cp:.3f} s; ratio {took / local_cp:.0f}x)"
                )
            if (tmp / "back.bin").read_bytes() != big.read_bytes():
                raise SystemExit("the file came back different")
        finally:
            if host is not None:
                host.close()
            server.stop()


if __name__ == "__main__":
    main()
