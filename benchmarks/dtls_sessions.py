"""Open K concurrent DTLS PSK sessions to one DtlsServer; print handshakes/s and memory/session.

    .venv/bin/python benchmarks/dtls_sessions.py --sessions 10000
    .venv/bin/python benchmarks/dtls_sessions.py --sessions 2000 --live-contexts 2000   # no parking

The server runs alone in a child process (so its resident memory is its own), driven through a
pipe with the datagrams the clients produce; the clients (python-mbedtls too) run here, ``batch``
handshakes in flight at a time. Each client sends one record after its handshake (as a node sends
CONNECT), then is dropped — its session stays open on the server. A sample of clients is kept to
check at the end that parked sessions still carry data both ways.

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

from bridge.dtls import ApplicationData, DtlsServer, SessionEstablished
from bridge.dtls_credentials import DtlsServerConfig
from firmware_proto import dtls_client as dc


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def key_for(i: int) -> bytes:
    return i.to_bytes(4, "big") * 4


def server_process(conn: Connection, sessions: int, live_contexts: int) -> None:
    keys = {f"n{i}": key_for(i) for i in range(sessions + 100)}
    server = DtlsServer(
        DtlsServerConfig(psk=keys), max_sessions=sessions + 100, live_contexts=live_contexts
    )
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=200, help="handshakes in flight at once")
    ap.add_argument("--live-contexts", type=int, default=256)
    ap.add_argument("--sample", type=int, default=20, help="clients kept to test old sessions")
    args = ap.parse_args(argv)

    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(
        target=server_process, args=(child, args.sessions, args.live_contexts)
    )
    proc.start()
    _, _baseline = parent.recv()
    kept: dict[int, dc.DtlsClient] = {}
    now = 0.0
    t0 = time.perf_counter()
    client_cpu = 0.0
    for start in range(0, args.sessions, args.batch):
        c0 = time.process_time()
        batch = {
            i: dc.DtlsClient(dc.PskClientConfig(f"n{i}", key_for(i)))
            for i in range(start, min(start + args.batch, args.sessions))
        }
        for client in batch.values():
            client.start(now)
        client_cpu += time.process_time() - c0
        for _ in range(20):
            now += 0.001
            if not exchange(parent, batch, now):
                break
        for i, client in batch.items():
            if client.state is not dc.ClientState.ESTABLISHED:
                raise SystemExit(f"client {i} did not connect: {client.events()}")
            client.send(b"CONNECT n%d" % i)
        exchange(parent, batch, now)
        for i in list(batch)[: max(0, args.sample - len(kept))]:
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
        1 for i, c in kept.items() for e in c.events()
        if isinstance(e, dc.ApplicationData) and e.plaintext == b"PONG %d" % i
    )
    parent.send(("report",))
    restored = parent.recv()["stats"]["restored"]
    parent.send(("stop",))
    parent.recv()
    proc.join()

    k = report["established"]
    growth = report["rss"] - report["rss_baseline"]
    print(f"sessions established      {k} (open on the server: {report['sessions']})")
    print(f"server CPU in handshakes  {report['cpu']:.2f} s -> {k / report['cpu']:.0f} handshakes/s "
          "on one core (target >= 500)")
    print(f"wall clock, both ends     {wall:.2f} s -> {k / wall:.0f} handshakes/s "
          "(clients and server on this machine)")
    print(f"server RSS growth         {growth / 2**20:.1f} MiB -> {growth / k / 1024:.1f} KiB "
          f"per session (target <= 20; live_contexts={args.live_contexts})")
    print(f"parked / restored         {report['stats']['parked']} / {restored}")
    print(f"old sessions answering    {pongs}/{len(kept)}")
    return 0 if pongs == len(kept) and k == args.sessions else 1


if __name__ == "__main__":
    raise SystemExit(main())
