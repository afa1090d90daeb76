"""``meshota demo``: a whole mesh OTA on embedded defaults, end to end, with a summary.

Default: the server side in-process (the real MQTT-SN gateway core and an in-memory broker, the
root's real blind relay, every node's real MQTT-SN client session) and a small simulated mesh:
nodes ask for the update during the collection window, the root streams one image with a signed
chunk map over a lossy multi-hop radio, nodes check every chunk and install; the baselines
(unicast per node, Mupgrade-style) run on the same topology. Prints the summary and where the
plots are; exit 0 only if every node installed and none installed a bad image.

``--live``: the earlier loopback run instead: a private mosquitto, the MQTT-SN gateway over UDP, a
root-node relay and N nodes; an operator sends every node a command and each answers at QoS 1 and 2.

The command line is meshota/cli/demo.py; this module runs the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.gateway.udp import GatewayServer
    from firmware_proto.aio.relay_udp import RelayUdp
    from mesh_sim.server import ApiServer

__all__ = ["run_live", "run_simulated"]


async def run_live(nodes: int, mode: str) -> int:
    """``--live``: mosquitto, the gateway over UDP, a relay and ``nodes`` nodes on loopback."""
    from bridge.gateway.udp import GatewayServer
    from firmware_proto.aio.relay_udp import RelayUdp
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

    from firmware_proto.aio.mqttsn_udp import UdpClient

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


def run_simulated(nodes: int, seed: int, out: Path | None) -> int:
    """The default demo: a simulated mesh against the in-process server (exit status)."""
    import shutil

    from mesh_sim.server import ApiServer, ServerSetupError

    if shutil.which("mender-artifact") is None:
        print(
            "meshota demo: mender-artifact is not installed (apt-get install -y mender-artifact), so no "
            "signed Mender artifact can be made: FALLING BACK to the in-memory server stand-in "
            "(MemoryDeviceService), not the Mender handlers",
            file=sys.stderr,
        )
        return _simulated_in_memory(nodes, seed, out)
    with tempfile.TemporaryDirectory(prefix="meshota-demo-server-") as tmp:
        try:
            server = ApiServer(Path(tmp))
        except Exception as exc:
            print(f"meshota demo: the in-process server did not start: {exc}", file=sys.stderr)
            return 1
        try:
            return _simulated_with(server, Path(tmp), nodes, seed, out)
        except ServerSetupError as exc:
            print(f"meshota demo: {exc}", file=sys.stderr)
            return 1
        finally:
            server.close()


def _simulated_in_memory(nodes: int, seed: int, out: Path | None) -> int:
    """The simulated mesh with the in-memory server stand-in (no mender-artifact on this host)."""
    from mesh_sim.metrics import write_metrics
    from mesh_sim.plots import write_plots
    from mesh_sim.report import print_summary, run_succeeded
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
    res = run_scenario(sc)
    print_summary(res.summary)
    out_dir = out or Path(tempfile.mkdtemp(prefix="meshota-demo-"))
    print(f"\nmetrics   {write_metrics(res.summary, out_dir)}")
    for p in write_plots(res.summary, res.topology.positions, out_dir):
        print(f"plot      {p}")
    ok = run_succeeded(res.summary, res.radio.alive)
    print(
        f"\n{'every node installed the signed image' if ok else 'SOME NODES DID NOT INSTALL'} "
        "(in-memory server)"
    )
    return 0 if ok else 1


def _simulated_with(server: ApiServer, tmp: Path, nodes: int, seed: int, out: Path | None) -> int:
    import random

    from mesh_sim.metrics import write_metrics
    from mesh_sim.plots import write_plots
    from mesh_sim.report import print_summary, run_succeeded
    from mesh_sim.runner import ServerSide, run_scenario
    from mesh_sim.scenario import parse_scenario
    from mesh_sim.server import ApiDeviceService, make_mender_artifact

    t0 = time.perf_counter()
    rng = random.Random(f"demo-{seed}")
    old_name, new_name = "demo-firmware-1.0", "demo-firmware-2.0"
    factory = make_mender_artifact(tmp, old_name, rng.randbytes(4096), server.vendor_pem)
    image = make_mender_artifact(tmp, new_name, rng.randbytes(128 * 1024), server.vendor_pem)
    server.login_admin()
    artifact_id = server.upload_artifact(image)  # bridge.artifacts checks the vendor signature
    total = nodes + 1
    for v in range(total):
        server.enroll(v, old_name)
    deployment_id = server.create_deployment("meshota demo", new_name)
    offers = [server.next_deployment(v, old_name) for v in range(total)]
    if any(o["id"] != deployment_id or o["artifact"]["id"] != artifact_id for o in offers):
        print("meshota demo: next did not name the deployment for every node", file=sys.stderr)
        return 1
    service = ApiDeviceService(server, artifact_id, new_name, offers[0]["artifact"]["source"]["uri"])
    print(
        f"meshota demo: {nodes} nodes + 1 root, simulated ESP-WIFI-MESH, {len(image) // 1024} KiB "
        "signed Mender artifact"
    )
    print(
        f"server    in-process Mender API handlers on SQLite ({server.db_path.name}): {total} devices "
        f"accepted, artifact {new_name} uploaded (signature checked), deployment {deployment_id[:8]} "
        f"created, every node's next names it (set-up {time.perf_counter() - t0:.1f} s)"
    )
    sc = parse_scenario(
        {
            "name": f"demo-{nodes}",
            "seed": seed,
            "topology": {"kind": "random" if nodes >= 12 else "line", "nodes": total, "loss": 0.05},
            "radio": {"profile": "wifi-mesh"},
            "image": {"size": len(image), "seq": 1, "artifact": new_name},
            "collection": {"window": 5.0},
        }
    )
    side = ServerSide(
        service=service,
        artifact_id=artifact_id,
        deployment_id=deployment_id,
        image=image,
        factory_image=factory,
        factory_name=old_name,
        image_ok=server.image_ok(),
        map_key=server.chunk_map_public_key(),
        factory_sequence=0,  # the server's first signed map carries sequence 1
        on_status=service.report_status,
        fetch_artifact=service.fetch_artifact,
    )
    res = run_scenario(sc, server_side=side)
    cp = res.control
    if cp is not None:
        print(
            f"control   in-process MQTT-SN gateway: {len(cp.gateway.sessions())} sessions, "
            f"{len(cp.group())} update requests reached the broker in the {sc.window:.0f} s window"
        )
    print()
    print_summary(res.summary)
    out_dir = out or Path(tempfile.mkdtemp(prefix="meshota-demo-"))
    metrics = write_metrics(res.summary, out_dir)
    print(f"\nmetrics   {metrics}")
    for p in write_plots(res.summary, res.topology.positions, out_dir):
        print(f"plot      {p}")
    stats = server.statistics(deployment_id)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if v)
    print(
        "\nmanagement API  GET /api/management/v1/deployments/deployments/"
        f"{deployment_id}/statistics: {shown}"
    )
    print(
        f"server    {server.calls} API calls: {service.downloads - 1} artifact downloads by the root, "
        f"{service.status_calls} status reports ({service.stale_statuses} overtaken on the mesh by a "
        "later one, not sent)"
        + (
            f", {len(service.status_errors)} refused: {service.status_errors[:3]}"
            if service.status_errors
            else ""
        )
    )
    ok = run_succeeded(res.summary, res.radio.alive) and stats.get("success", 0) == total
    print(
        f"\n{'every node installed the signed image' if ok else 'SOME NODES DID NOT INSTALL'}: "
        f"server statistics say success {stats.get('success', 0)}/{total} "
        f"(wall {time.perf_counter() - t0:.1f} s)"
    )
    return 0 if ok else 1
