"""Open K concurrent DTLS PSK sessions to one DtlsServer; print handshakes/s and memory/session.

    .venv/bin/python benchmarks/dtls_sessions.py --sessions 10000
    .venv/bin/python benchmarks/dtls_sessions.py --sessions 2000 --live-contexts 2000   # no parking

The server runs alone in a child process (so its resident memory is its own), driven through a
pipe with the datagrams the clients produce; the clients (python-mbedtls too) run here, ``batch``
handshakes in flight at a time. Each client sends one record after its handshake (as a node sends
CONNECT), then is dropped — its session stays open on the server. A sample of clients is kept to
check at the end that parked sessions still carry data both ways.

Two runs in one invocation: a baseline with every mbedTLS context kept live (what a plain
mbedTLS server costs per session, ``--baseline-sessions``), then meshota's server with only
``live_contexts`` live and the rest parked; the ratios compare the two.
Printed: server CPU seconds spent in handshakes → handshakes/s on one core; wall-clock rate of the
whole exchange; server RSS growth / K (KiB per session, including the fixed pool of
``live_contexts`` unparked contexts). Targets: ≥ 500 handshakes/s, ≤ 20 KiB/session at 10,000.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bridge.gateway.dtls_server import ApplicationData, DtlsServer, SessionEstablished
from firmware_proto import dtls_client as dc
from wire.dtls_credentials import DtlsServerConfig


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def key_for(i: int) -> bytes:
    return i.to_bytes(4, "big") * 4


def server_process(conn: Connection, sessions: int, live_contexts: int) -> None:
    keys = {f"n{i}": key_for(i) for i in range(sessions + 100)}
    server = DtlsServer(DtlsServerConfig(psk=keys), max_sessions=sessions + 100, live_contexts=live_contexts)
    cpu = 0.0
    established = 0
    baseline = rss_bytes()
    conn.send(("ready", baseline))
    while True:
        msg = conn.recv()
        if msg[0] == "datagrams":
            _, now, datagrams = msg
            t0 = time.process_time()
            for peer, data in datagrams:
                server.receive_datagram(data, peer, now)
            for event in server.events():
                if isinstance(event, SessionEstablished):
                    established += 1
                elif isinstance(event, ApplicationData) and event.plaintext.startswith(b"PING"):
                    server.send(event.peer, b"PONG" + event.plaintext[4:])
            out = server.datagrams_to_send()
            cpu += time.process_time() - t0
            conn.send(out)
        elif msg[0] == "report":
            conn.send(
                {
                    "cpu": cpu,
                    "established": established,
                    "sessions": server.session_count,
                    "rss_baseline": baseline,
                    "rss": rss_bytes(),
                    "stats": dict(server.stats),
                }
            )
        else:
            conn.send("bye")
            return


def exchange(conn: Connection, clients: dict[int, dc.DtlsClient], now: float) -> int:
    """One round: everything the clients queued → server → back; returns datagrams moved."""
    up = [(peer, d) for peer, c in clients.items() for d in c.datagrams_to_send()]
    if not up:
        return 0
    conn.send(("datagrams", now, up))
    down = conn.recv()
    for peer, d in down:
        client = clients.get(peer)
        if client is not None:
            client.receive_datagram(d, now)
    return len(up) + len(down)


def run(sessions: int, batch_size: int, live_contexts: int, sample: int) -> dict[str, Any]:
    """One server process, ``sessions`` handshakes; returns the figures."""
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=server_process, args=(child, sessions, live_contexts))
    proc.start()
    _, _baseline = parent.recv()
    kept: dict[int, dc.DtlsClient] = {}
    now = 0.0
    t0 = time.perf_counter()
    for start in range(0, sessions, batch_size):
        batch = {
            i: dc.DtlsClient(dc.PskClientConfig(f"n{i}", key_for(i)))
            for i in range(start, min(start + batch_size, sessions))
        }
        for client in batch.values():
            client.start(now)
        for _ in range(20):
            now += 0.001
            if not exchange(parent, batch, now):
                break
        for i, client in batch.items():
            if client.state is not dc.ClientState.ESTABLISHED:
                raise SystemExit(f"client {i} did not connect: {client.events()}")
            client.send(b"CONNECT n%d" % i)
        exchange(parent, batch, now)
        for i in list(batch)[: max(0, sample - len(kept))]:
            kept[i] = batch[i]
    wall = time.perf_counter() - t0

    parent.send(("report",))
    report: dict[str, Any] = parent.recv()
    # old sessions (most of them parked by now) still work both ways
    for i, client in kept.items():
        client.events()
        client.send(b"PING %d" % i)
    exchange(parent, kept, now + 1)
    pongs = sum(
        1
        for i, c in kept.items()
        for e in c.events()
        if isinstance(e, dc.ApplicationData) and e.plaintext == b"PONG %d" % i
    )
    parent.send(("report",))
    restored = parent.recv()["stats"]["restored"]
    parent.send(("stop",))
    parent.recv()
    proc.join()
    k = report["established"]
    growth = report["rss"] - report["rss_baseline"]
    return {
        "established": k,
        "open": report["sessions"],
        "cpu": report["cpu"],
        "hs_per_s": k / report["cpu"],
        "wall_hs_per_s": k / wall,
        "kib_per_session": growth / k / 1024,
        "parked": report["stats"]["parked"],
        "restored": restored,
        "pongs": pongs,
        "kept": len(kept),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=200, help="handshakes in flight at once")
    ap.add_argument("--live-contexts", type=int, default=256)
    ap.add_argument(
        "--baseline-sessions",
        type=int,
        default=1000,
        help="sessions in the baseline run: every context kept live (plain mbedTLS cost)",
    )
    ap.add_argument("--sample", type=int, default=20, help="clients kept to test old sessions")
    args = ap.parse_args(argv)

    base_n = min(args.baseline_sessions, args.sessions)
    base = run(base_n, args.batch, base_n, args.sample)
    main_run = run(args.sessions, args.batch, args.live_contexts, args.sample)

    print(f"{'run':<34} {'sessions':>8} {'hs/s (1 core)':>14} {'hs/s wall':>10} {'KiB/session':>12}")
    for name, r in (
        (f"baseline: all {base_n} contexts live", base),
        (f"meshota: live_contexts={args.live_contexts}", main_run),
    ):
        print(
            f"{name:<34} {r['established']:>8} {r['hs_per_s']:>14.0f} {r['wall_hs_per_s']:>10.0f} "
            f"{r['kib_per_session']:>12.1f}"
        )
    print(
        f"memory per session: {main_run['kib_per_session'] / base['kib_per_session']:.2f}x the baseline "
        f"(target <= 20 KiB at 10,000: {'MET' if main_run['kib_per_session'] <= 20 else 'NOT MET'})"
    )
    print(
        f"handshake rate:     {main_run['hs_per_s'] / base['hs_per_s']:.2f}x the baseline "
        f"(target >= 500/s: {'MET' if main_run['hs_per_s'] >= 500 else 'NOT MET'})"
    )
    print(
        f"parked / restored   {main_run['parked']} / {main_run['restored']}; "
        f"old sessions answering {main_run['pongs']}/{main_run['kept']}"
    )
    ok = all(r["pongs"] == r["kept"] for r in (base, main_run)) and main_run["established"] == args.sessions
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
