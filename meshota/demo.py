"""``meshota demo``: an end-to-end run on embedded defaults, on loopback only.

A private mosquitto, the MQTT-SN gateway, a root-node relay and N nodes behind it. An operator
(plain MQTT client on the broker) sends every node a command; each node answers at QoS 1 and QoS 2
through relay → gateway → broker. Prints a summary; exit 0 only if every node answered.
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


def demo_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="meshota demo", description=__doc__)
    ap.add_argument("--nodes", type=int, default=5, help="nodes behind the relay (default 5)")
    ap.add_argument("--mode", choices=("transparent", "aggregating"), default="transparent")
    args = ap.parse_args(argv)
    if not 1 <= args.nodes <= 500:
        print(f"meshota demo: --nodes {args.nodes} is not in 1..500", file=sys.stderr)
        return 2
    from meshota.broker import BrokerStartError

    try:
        return asyncio.run(_run(args.nodes, args.mode))
    except BrokerStartError as exc:
        print(f"meshota demo: {exc}", file=sys.stderr)
        return 1
