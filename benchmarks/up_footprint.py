"""What ``meshota up`` costs next to its parts started by hand, in the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/up_footprint.py [--nodes 1000]

Two stacks, one after the other, each on an empty data directory and free loopback ports:

- **up**: ``meshota up`` (supervisor + mosquitto + ``meshota server`` + ``meshota gateway``);
- **parts**: the same first-start steps and the same three processes started separately, as an
  operator would without ``up``: ``meshota broker-config``, ``meshota admin create-user`` and
  ``deployment-key``, mosquitto (same configuration: ACL, passwords, persistence),
  ``meshota server --broker``, ``meshota gateway --udp --dtls``.

Printed per stack: cold start to ready (spawn -> HTTP ``/readyz`` 200, broker port open, gateway
listening; first start included); memory of the whole process tree idle (sum of Rss, which counts
libpython's shared pages once per process, and of Pss, which divides them among the processes),
and with ``--nodes`` DTLS (PSK) nodes connected (handshake + MQTT-SN CONNECT, so one broker
connection each in transparent mode). The nodes run in a separate client process (not counted),
spread over source addresses 127.0.0.2.. so the gateway's per-source handshake rate limit is
not what is measured. Then the ratios up/parts (target: 1.0 or less for memory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PER_SOURCE = 16  # nodes per loopback source address (the gateway allows a burst of 40 per source)


def psk_lines(nodes: int) -> str:
    return "".join(f"b{i:05d},{(i + 1).to_bytes(4, 'big').hex() * 4}\n" for i in range(nodes))


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def memory_kib(pids: list[int], field: str) -> int:
    """Sum of ``field`` (``Rss``: resident, shared pages counted in every process; ``Pss``: shared
    pages divided among the processes that map them) from /proc/PID/smaps_rollup."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait(what: str, check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- the nodes (client process) ----------------------------------------------------------------
async def _nodes(dtls: tuple[str, int], nodes: int) -> None:
    from firmware_proto.aio.dtls_node import DtlsUdpClient
    from firmware_proto.dtls_client import PskClientConfig

    keys = dict(line.split(",") for line in psk_lines(nodes).splitlines())
    clients = []

    async def one(i: int) -> None:
        name = f"b{i:05d}"
        source = (f"127.0.{2 + i // PER_SOURCE // 250}.{2 + (i // PER_SOURCE) % 250}", 0)
        client = DtlsUdpClient(dtls, name, dtls=PskClientConfig(name, bytes.fromhex(keys[name])),
                               local_addr=source, keep_alive=600, retry_interval=2.0)  # fmt: skip
        await client.__aenter__()
        clients.append(client)

    for start in range(0, nodes, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 50, nodes))))
    print(f"connected {len(clients)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def connect_nodes(dtls: str, nodes: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--client", dtls, "--nodes", str(nodes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("connected"):
        raise SystemExit(f"nodes did not connect: {line!r}")
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(30)


# -- the two stacks ----------------------------------------------------------------------------
def meshota(*args: str) -> list[str]:
    return [sys.executable, "-m", "meshota", *args]


def measure(name: str, root_pids: Any, dtls: str, nodes: int, settle: float) -> dict[str, float]:
    def sample() -> tuple[float, float]:
        pids = [p for r in root_pids() for p in tree_pids(r)]
        each = ", ".join(f"{_name(p)} {memory_kib([p], 'Rss') / 1024:.1f}" for p in pids)
        print(f"  {name}: RSS per process (MiB): {each}", flush=True)
        return memory_kib(pids, "Rss") / 1024, memory_kib(pids, "Pss") / 1024

    time.sleep(settle)
    idle, idle_pss = sample()
    t0 = time.monotonic()
    clients = connect_nodes(dtls, nodes)
    connect_s = time.monotonic() - t0
    time.sleep(settle)
    loaded, loaded_pss = sample()
    release(clients)
    print(f"  {name}: idle RSS {idle:.1f} MiB (PSS {idle_pss:.1f}), {nodes} nodes RSS {loaded:.1f} MiB "
          f"(PSS {loaded_pss:.1f}), connected in {connect_s:.1f} s", flush=True)  # fmt: skip
    return {"idle_mib": idle, "loaded_mib": loaded, "idle_pss": idle_pss, "loaded_pss": loaded_pss}


def _name(pid: int) -> str:
    """``mosquitto``, ``gateway``, ``server`` or ``up`` (meshota up's own process, which runs the
    server) from the command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    for word in (b"gateway", b"server", b"meshota.cli.up_runner"):
        if word in argv:
            return "up (supervisor + server)" if word == b"meshota.cli.up_runner" else word.decode()
    return Path(argv[0].decode()).name


def run_up(tmp: Path, nodes: int, settle: float) -> dict[str, float]:
    data = tmp / "up"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "psk.txt").write_text(psk_lines(nodes))
    conf = tmp / "up.toml"
    conf.write_text(
        '[http]\nlisten = "127.0.0.1:0"\n[broker]\nlisten = "127.0.0.1:0"\n'
        '[gateway]\nudp = "127.0.0.1:0"\ndtls = "127.0.0.1:0"\n[log]\nlevel = "warning"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHOTA_ADMIN_PASSWORD": "bench-password-1"}
    t0 = time.monotonic()
    up = subprocess.Popen(meshota("up", "--config", str(conf), "--data", str(data)),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    addresses = data / "run" / "addresses.json"
    wait("meshota up", addresses.exists)
    start = time.monotonic() - t0
    print(f"  up: cold start to ready {start:.2f} s", flush=True)
    dtls = json.loads(addresses.read_text())["dtls"]
    try:
        figures = measure("up", lambda: [up.pid], dtls, nodes, settle)
        own = memory_kib([up.pid], "Rss") / 1024, memory_kib([up.pid], "Pss") / 1024
        print(f"  up: its own process (supervisor + server): RSS {own[0]:.1f} MiB, PSS {own[1]:.1f} MiB",
              flush=True)  # fmt: skip
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    return {"start_s": start, **figures}


def run_parts(tmp: Path, nodes: int, settle: float) -> dict[str, float]:
    data = tmp / "parts"
    (data / "keys").mkdir(parents=True)
    psk = data / "keys" / "psk.txt"
    psk.write_text(psk_lines(nodes))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHOTA_ADMIN_PASSWORD": "bench-password-1"}
    http, mqtt = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    udp, dtls = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    db = f"sqlite:///{data / 'meshota.db'}"
    procs: list[subprocess.Popen[bytes]] = []
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    t0 = time.monotonic()
    broker = data / "broker"
    subprocess.run(meshota("broker-config", "--out", str(broker)), check=True, env=env, **quiet)
    creds = dict(line.split(":", 1) for line in (broker / "credentials").read_text().splitlines())
    (broker / "gateway.password").write_text(creds["meshota-gateway"] + "\n")
    (broker / "db").mkdir()
    for args in (["create-user", "--username", "admin@x", "--password-env", "MESHOTA_ADMIN_PASSWORD"],
                 ["deployment-key", "--out", str(data / "keys" / "pub.pem")]):  # fmt: skip
        subprocess.run(meshota("admin", args[0], "--db", db, *args[1:]), check=True, env=env, **quiet)
    (broker / "mosquitto.conf").write_text(
        f"listener {mqtt} 127.0.0.1\npersistence true\npersistence_location {broker / 'db'}/\n"
        f"log_dest stderr\nlog_type error\nmax_queued_messages 100000\n"
        + f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"  # as meshota up does: keep our 0600 files readable
        + (broker / "meshota.conf").read_text()
    )
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    procs.append(subprocess.Popen([mosquitto, "-c", str(broker / "mosquitto.conf")], **quiet))
    wait("mosquitto", lambda: tcp_open(mqtt))
    server_env = {**env, "MESHOTA_BROKER_PASSWORD": creds["meshota-bridge"]}
    procs.append(subprocess.Popen(meshota(
        "server", "--http", f"127.0.0.1:{http}", "--db", db, "--artifacts", str(data / "artifacts"),
        "--broker", f"mqtt://127.0.0.1:{mqtt}", "--broker-username", "meshota-bridge",
        "--psk-file", str(psk), "--log-level", "warning"), env=server_env, **quiet))  # fmt: skip
    procs.append(subprocess.Popen(meshota(
        "gateway", "--broker", f"mqtt://127.0.0.1:{mqtt}", "--udp", f"127.0.0.1:{udp}",
        "--dtls", f"127.0.0.1:{dtls}", "--psk-file", str(psk), "--broker-username", "meshota-gateway",
        "--broker-password-file", str(broker / "gateway.password")), env=env, **quiet))  # fmt: skip
    try:
        wait("meshota server", lambda: http_ready(f"http://127.0.0.1:{http}"))
        wait("meshota gateway", lambda: _udp_bound(procs[2].pid, dtls))
        start = time.monotonic() - t0
        print(f"  parts: cold start to ready {start:.2f} s", flush=True)
        figures = measure("parts", lambda: [p.pid for p in procs], f"127.0.0.1:{dtls}", nodes, settle)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {"start_s": start, **figures}


def _udp_bound(pid: int, port: int) -> bool:
    """The gateway listens once a UDP socket is bound to ``port`` (it prints nothing we read)."""
    hexport = f":{port:04X}"
    try:
        return any(hexport in line.split()[1] for line in Path("/proc/net/udp").read_text().splitlines()[1:])
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before each RSS sample")
    ap.add_argument("--client", metavar="DTLS", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        host, _, port = args.client.rpartition(":")
        asyncio.run(_nodes((host, int(port)), args.nodes))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="up-footprint-") as tmp:
        print(f"meshota up vs the parts started separately ({args.nodes} DTLS nodes)", flush=True)
        up = run_up(Path(tmp), args.nodes, args.settle)
        parts = run_parts(Path(tmp), args.nodes, args.settle)
    print(f"\n{'':<28}{'up':>10}{'parts':>10}{'up/parts':>10}")
    for key, label in (("start_s", "cold start to ready (s)"), ("idle_mib", "RSS idle (MiB)"),
                       ("loaded_mib", f"RSS, {args.nodes} nodes (MiB)"), ("idle_pss", "PSS idle (MiB)"),
                       ("loaded_pss", f"PSS, {args.nodes} nodes (MiB)")):  # fmt: skip
        print(f"{label:<28}{up[key]:>10.2f}{parts[key]:>10.2f}{up[key] / parts[key]:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
