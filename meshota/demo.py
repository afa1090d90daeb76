"""``meshota demo``: a whole mesh OTA on embedded defaults, end to end, with a summary.

Default: the server side in-process (the real MQTT-SN gateway core and an in-memory broker, the
root's real blind relay, every node's real MQTT-SN client session) and a small simulated mesh:
nodes ask for the update during the collection window, the root streams one image with a signed
chunk map over a lossy multi-hop radio, nodes check every chunk and install; the baselines
(unicast per node, Mupgrade-style) run on the same topology. Prints the summary and where the
plots are; exit 0 only if every node installed and none installed a bad image.

``--live`` is the same OTA over real sockets on loopback instead (mosquitto, the gateway over
DTLS, the server, a relay process, nodes with file-backed flash): meshota/live/.

The command line is meshota/cli/demo.py; this module runs the simulated demo.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh_sim.server import ApiServer

__all__ = ["run_simulated"]


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
        on_mesh_report=service.mesh_report,
        node_name=service.node_name,
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
    streams = service.mesh_view()
    roots = [r for st in streams for r in st["roots"]]
    print(
        f"mesh view GET /api/meshota/v1/management/mesh: {service.mesh_reports} progress reports "
        f"({service.mesh_report_bytes} bytes, "
        f"{1000 * service.mesh_report_seconds / max(1, service.mesh_reports):.1f} ms each at the server) "
        f"from the streaming roots and relays, {len(roots)} top-level root(s) in {len(streams)} stream(s)"
        + "".join(
            f"; root {r['root'][:8]}: {r['bytes_on_air']} bytes in {r['frames_on_air']} frames on air, "
            f"{r['members']} nodes" + (", ended complete" if r["complete"] else "")
            for r in roots[:3]
        )
        + (f", {len(service.mesh_report_errors)} refused: {service.mesh_report_errors[:3]}"
           if service.mesh_report_errors else "")
    )  # fmt: skip
    ok = run_succeeded(res.summary, res.radio.alive) and stats.get("success", 0) == total
    print(
        f"\n{'every node installed the signed image' if ok else 'SOME NODES DID NOT INSTALL'}: "
        f"server statistics say success {stats.get('success', 0)}/{total} "
        f"(wall {time.perf_counter() - t0:.1f} s)"
    )
    return 0 if ok else 1
