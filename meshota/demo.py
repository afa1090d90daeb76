"""``meshota demo``: a whole mesh OTA on embedded defaults, end to end, with a summary.

Default: the server side in-process (the real MQTT-SN gateway core and an in-memory broker, the
root's real blind relay, every node's real MQTT-SN client session) and a small simulated mesh:
nodes ask for the update during the collection window, the root streams one image with a signed
chunk map over a lossy multi-hop radio, nodes check every chunk and install; the baselines
(unicast per node, Mupgrade-style) run on the same topology. Prints the summary and where the
plots are; exit 0 only if every node installed and none installed a bad image.

``--live``: the earlier loopback run instead: a private mosquitto, the MQTT-SN gateway over UDP, a
root-node relay and N nodes; an operator sends every node a command and each answers at QoS 1 and 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.gateway import GatewayServer
    from firmware_proto.relay_udp import RelayUdp

__all__ = ["demo_main"]


async def _run(nodes: int, mode: str) -> int:
    from bridge.gateway import GatewayServer
    from firmware_proto.relay_udp import RelayUdp
    from meshota.broker import start_mosquitto
    from mqttsn import GatewayConfig

    with tempfile.TemporaryDirectory(prefix="meshota-demo-") as tmp:
        broker = start_mosquitto(Path(tmp))
        print(f"broker    mosquitto on {broker.url} (private, stops at exit)")
        try:
            gw = GatewayServer(GatewayConfig(mode=mode), (broker.host, broker.port), ("127.0.0.1", 0))  # type: ignore[arg-type]
            await gw.start()
            print(f"gateway   MQTT-SN on udp {gw.address[0]}:{gw.address[1]} ({mode})")
            relay = RelayUdp(gw.address, ("127.0.0.1", 0))
            await relay.start()
            print(f"relay     root node on udp {relay.listen_address[0]}:{relay.listen_address[1]}")
            try:
                return await _exercise(nodes, broker.host, broker.port, relay, gw)
            finally:
                relay.close()
                await gw.close()
        finally:
            broker.stop()


async def _exercise(nodes: int, host: str, port: int, relay: RelayUdp, gw: GatewayServer) -> int:
    import aiomqtt as mq

    from firmware_proto.mqttsn_udp import UdpClient

    results: dict[str, dict[str, float]] = {}
    async with mq.Client(host, port, identifier="operator") as op:
        await op.subscribe("meshota/demo/status/#", qos=2)
        clients = []
        for i in range(nodes):
            name = f"node-{i:02d}"
            t0 = time.perf_counter()
            c = UdpClient(relay.listen_address, name, keep_alive=30, retry_interval=1.0)
            await c.__aenter__()
            await c.subscribe("meshota/demo/cmd", qos=1)
            results[name] = {"connect_ms": (time.perf_counter() - t0) * 1000}
            clients.append((name, c))

        async def node(name: str, c: UdpClient) -> None:
            async for msg in c.messages:
                results[name]["cmd_at"] = time.perf_counter()
                await c.publish(f"meshota/demo/status/{name}/q1", b"ok " + msg.payload, qos=1)
                await c.publish(f"meshota/demo/status/{name}/q2", b"ok " + msg.payload, qos=2)
                return

        tasks = [asyncio.create_task(node(n, c)) for n, c in clients]
        t_cmd = time.perf_counter()
        await op.publish("meshota/demo/cmd", b"report", qos=1)
        want = 2 * nodes
        got = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                async for m in op.messages:
                    name = m.topic.value.split("/")[3]
                    results[name][f"{m.topic.value.rsplit('/', 1)[1]}_ms"] = (
                        time.perf_counter() - t_cmd
                    ) * 1000
                    got += 1
                    if got >= want:
                        break
        for t in tasks:
            t.cancel()
        for _, c in clients:
            with contextlib.suppress(Exception):
                await c.__aexit__(None, None, None)

    print()
    print(f"{'node':<9} {'connect ms':>10} {'QoS1 reply ms':>14} {'QoS2 reply ms':>14}")
    ok = True
    for name, r in sorted(results.items()):
        q1, q2 = r.get("q1_ms"), r.get("q2_ms")
        ok = ok and q1 is not None and q2 is not None
        print(f"{name:<9} {r['connect_ms']:10.1f} {_ms(q1)} {_ms(q2)}")
    print()
    print(f"gateway   {dict(sorted(gw.gateway.stats.items()))}")
    print(f"\n{'all nodes answered' if ok else 'SOME NODES DID NOT ANSWER'}: {got}/{want} replies")
    return 0 if ok else 1


def _ms(v: float | None) -> str:
    return f"{v:14.1f}" if v is not None else f"{'MISSING':>14}"


def _simulated(nodes: int, seed: int, out: Path | None) -> int:
    from mesh_sim.cli import print_summary, run_succeeded
    from mesh_sim.metrics import write_metrics
    from mesh_sim.plots import write_plots
    from mesh_sim.runner import run_scenario
    from mesh_sim.scenario import parse_scenario

    sc = parse_scenario(
        {
            "name": f"demo-{nodes}",
            "seed": seed,
            "topology": {"kind": "random" if nodes >= 12 else "line", "nodes": nodes + 1, "loss": 0.05},
            "radio": {"profile": "wifi-mesh"},
            "image": {"size": 128 * 1024, "seq": 2, "artifact": "demo-firmware-2.0"},
            "collection": {"window": 5.0},
        }
    )
    print(f"meshota demo: {nodes} nodes + 1 root, simulated ESP-WIFI-MESH, 128 KiB signed image")
    res = run_scenario(sc)
    cp = res.control
    if cp is not None:
        print(
            f"server    in-process MQTT-SN gateway: {len(cp.gateway.sessions())} sessions, "
            f"{len(cp.group())} update requests reached the broker in the {sc.window:.0f} s window"
        )
    print()
    print_summary(res.summary)
    out_dir = out or Path(tempfile.mkdtemp(prefix="meshota-demo-"))
    metrics = write_metrics(res.summary, out_dir)
    print(f"\nmetrics   {metrics}")
    for p in write_plots(res.summary, res.topology.positions, out_dir):
        print(f"plot      {p}")
    ok = run_succeeded(res.summary, res.radio.alive)
    print(
        f"\n{'every node installed the signed image' if ok else 'SOME NODES DID NOT INSTALL'} "
        f"(wall {res.wall_s:.1f} s)"
    )
    return 0 if ok else 1


def demo_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="meshota demo", description=__doc__)
    ap.add_argument("--nodes", type=int, default=20, help="mesh nodes besides the root (default 20)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="directory for metrics.json and PNGs")
    ap.add_argument("--live", action="store_true", help="the loopback run with mosquitto instead")
    ap.add_argument("--mode", choices=("transparent", "aggregating"), default="transparent")
    args = ap.parse_args(argv)
    if not 1 <= args.nodes <= 500:
        print(f"meshota demo: --nodes {args.nodes} is not in 1..500", file=sys.stderr)
        return 2
    if not args.live:
        return _simulated(args.nodes, args.seed, args.out)
    from meshota.broker import BrokerStartError

    try:
        return asyncio.run(_run(args.nodes, args.mode))
    except BrokerStartError as exc:
        print(f"meshota demo: {exc}", file=sys.stderr)
        return 1
