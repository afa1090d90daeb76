"""``meshota demo --live``: a real OTA over real sockets on loopback, then a summary.

1. Two mender-artifact-signed artifacts with a fresh vendor key (the factory image, the update).
2. The server side (:func:`meshota.live.stack.server_side`), every device's PSK provisioned first.
3. A root-node relay process (``meshota relay``) in front of the gateway's DTLS port.
4. The root and N nodes (:class:`meshota.live.fleet.Fleet`) enrol over DTLS through the relay;
   the operator (:class:`meshota.live.operator.Operator`, the management API over HTTP) accepts
   them, uploads the update, deploys it to the nodes.
5. Each node learns the deployment with its own ``next``; the root fetches the artifact once,
   block-wise over MQTT-SN, and streams it over UDP multicast on ``lo``; nodes verify every chunk
   against the signed chunk map, install into their file-backed flash, reboot into it, check the
   vendor signature, commit, and report sealed statuses that the root batches without reading.
   The root reports the stream's progress (``POST /api/meshota/v1/devices/mesh/report`` over its
   MQTT-SN session, once a second and at the end); the summary prints what the management API's
   mesh view shows of it, and keeps that answer in ``mesh-view.json`` in the run's directory.
6. The management API must show success for every node, and every node's flash files must hold
   the new image; exit 0 only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from meshota.live.children import Child, start_child
from meshota.live.fleet import Fleet, check_flash, slot_size_for
from meshota.live.operator import Operator
from meshota.live.stack import StackAddresses, server_side

__all__ = ["IMAGE_BYTES", "run_live"]

IMAGE_BYTES = 64 * 1024
OLD, NEW = "demo-firmware-1.0", "demo-firmware-2.0"
GROUP = "239.255.77.8"


@dataclass(frozen=True)
class _Inputs:
    work: Path
    factory: bytes
    image: bytes
    vendor_public: bytes
    psks: dict[str, bytes]


def _vendor_key(directory: Path) -> tuple[Path, bytes]:
    """A fresh vendor signing key (PEM file for mender-artifact) and its public PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / "vendor-private.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / "vendor-public.pem").write_bytes(public)
    return private, public


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _relay(gateway: str, log: Path) -> Iterator[tuple[Child, tuple[str, int]]]:
    child = start_child(
        "meshota relay",
        ["relay", "--gateway", f"udp://{gateway}", "--listen", "udp://127.0.0.1:0"],
        log,
    )
    try:
        found = child.wait_for(r"meshota relay: (\S+):(\d+) -> ", timeout=30)
        yield child, (found.group(1), int(found.group(2)))
        child.check_alive()
    finally:
        child.stop()


def run_live(nodes: int, out: Path | None = None) -> int:
    """The whole live OTA with ``nodes`` nodes and a root; its files in ``out`` (kept) or a
    temporary directory. Exit status: 0 only if every node installed the update."""
    from firmware_proto.aio.mqttsn_udp import UdpClientError
    from firmware_proto.device_api import DeviceApiError
    from mesh_sim.server import ServerSetupError, make_mender_artifact
    from meshota.broker import BrokerStartError
    from meshota.broker_config import BrokerConfigError
    from meshota.live.children import ChildError
    from meshota.live.operator import OperatorError

    if shutil.which("mender-artifact") is None:
        print(
            "meshota demo: mender-artifact is not installed (apt-get install -y mender-artifact)",
            file=sys.stderr,
        )
        return 1
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as es:
            if out is None:
                work = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="meshota-live-")))
            else:
                out.mkdir(parents=True, exist_ok=True)
                work = out
            private, public = _vendor_key(work / "vendor")
            rng = random.Random()
            factory = make_mender_artifact(work / "artifacts", OLD, rng.randbytes(4096), private)
            image = make_mender_artifact(work / "artifacts", NEW, rng.randbytes(IMAGE_BYTES), private)
            names = ["root-0", *(f"node-{i:02d}" for i in range(1, nodes + 1))]
            psks = {name: secrets.token_bytes(16) for name in names}
            print(
                f"meshota demo --live: {nodes} nodes + 1 root over real sockets on loopback, "
                f"{len(image) // 1024} KiB signed Mender artifact (files in {work})"
            )
            addresses = es.enter_context(
                server_side(work / "server", psks, work / "vendor" / "vendor-public.pem")
            )
            print(f"server    {addresses.description} (up in {time.perf_counter() - t0:.1f} s)")
            relay, listen = es.enter_context(_relay(addresses.dtls, work / "server" / "logs" / "relay.log"))
            print(
                f"relay     meshota relay (pid {relay.proc.pid}): udp {listen[0]}:{listen[1]} -> gateway "
                f"dtls {addresses.dtls}; holds no keys"
            )
            inputs = _Inputs(work, factory, image, public, psks)
            return asyncio.run(_ota(addresses, listen, inputs, t0))
    except (
        ChildError,
        BrokerStartError,
        BrokerConfigError,
        ServerSetupError,
        OperatorError,
        DeviceApiError,  # a device-API call of the root or a node gave no usable answer
        UdpClientError,  # a DTLS handshake or MQTT-SN CONNECT through the relay failed
        TimeoutError,
    ) as exc:
        print(f"meshota demo: {exc or exc.__class__.__name__}", file=sys.stderr)
        return 1


async def _ota(addr: StackAddresses, relay: tuple[str, int], inp: _Inputs, t0: float) -> int:
    from bridge.artifacts import load_verify_key
    from mesh_sim.server import DEVICE_TYPE
    from meshota.live.operator import OperatorError
    from wire.image_verify import mender_image_verifier

    image_ok = mender_image_verifier([load_verify_key(inp.vendor_public)])
    nodes = len(inp.psks) - 1
    async with Operator(addr.http) as op, AsyncExitStack() as stack:
        await op.login(addr.admin_user, addr.admin_password)
        artifact_id = await op.upload(NEW, inp.image)  # the server checks the vendor signature
        map_key = serialization.load_pem_public_key(await op.chunk_map_key())
        if not isinstance(map_key, ed25519.Ed25519PublicKey):
            raise OperatorError("the chunk-map key is not an Ed25519 public key")
        fleet = Fleet(stack, relay, inp.psks, inp.work / "nodes")
        t_enrol = time.perf_counter()
        await fleet.connect()
        before = await fleet.authenticate()
        await op.accept_pending()
        after = await fleet.authenticate()
        ids = {d["identity_data"]["mac"]: d["id"] for d in await op.devices()}
        by_name = {name: ids.get(fleet.mac(i), "") for i, name in enumerate(fleet.names)}
        print(
            f"enrol     {len(fleet.names)} devices over DTLS (PSK) through the relay: "
            f"{before.count(401)} pending (401), accepted by the operator, {after.count(200)} "
            f"authenticated (200) ({time.perf_counter() - t_enrol:.1f} s)"
        )
        if after.count(200) != len(fleet.names):
            raise OperatorError(f"not every device authenticated after acceptance: {after}")
        deployment = await op.deploy("meshota live demo", NEW, [by_name[n] for n in fleet.node_names])
        slot = slot_size_for(inp.factory, inp.image)
        group = (GROUP, _free_udp_port())
        await fleet.start_group(
            group, map_key, image_ok, (inp.factory, OLD), slot, device_type=DEVICE_TYPE, device_ids=by_name
        )
        learned = await fleet.check_for_update(DEVICE_TYPE)
        print(
            f"deploy    {NEW} ({len(inp.image):,} B, vendor signature checked by the server) uploaded as "
            f"{artifact_id[:8]}, deployment {deployment[:8]} to {nodes} nodes; {learned.count(True)}/{nodes} "
            "learned it with their own next"
        )
        t_ota = time.perf_counter()
        stats = await _wait_final(op, fleet, deployment, nodes, timeout=60.0 + nodes)
        listing = {d["id"]: d["status"] for d in await op.deployment_devices(deployment)}
        view = await op.mesh_view()
        (inp.work / "mesh-view.json").write_text(json.dumps(view, indent=1))
        return _summary(
            fleet, inp, addr, group, deployment, stats, listing, by_name, view, slot, image_ok, t0, t_ota
        )


def _print_counting(fleet: Fleet) -> None:
    from wire.countme import window_start

    counting = fleet.counting
    assert counting is not None
    core = counting.counter
    week = core.window
    begins = time.strftime("%Y-%m-%d", time.gmtime(window_start(week))) if week is not None else "-"
    cells = ", ".join(f"{v}/{t}/age {b}: {n}" for (b, v, t), n in sorted(core.tally().items()))
    print(
        f"counting  the root counted {core.stats.counted} devices (its nodes and itself) for the week of "
        f"{begins}, each once ({core.stats.repeats} repeated reports): {cells}; after the week it seals "
        "one count record per cell, no per-node count message leaves the mesh"
    )


def _print_mesh(fleet: Fleet, view: dict[str, Any], by_name: dict[str, str]) -> None:
    """What the management API's mesh view shows of the root's reports (as the simulated demo)."""
    assert fleet.root is not None
    root = fleet.root
    streams = view.get("reported_by_roots", [])
    roots = [r for st in streams for r in st["roots"]]
    name_of = {v: k for k, v in by_name.items()}
    bad = root.reports_refused
    refused = f", {len(bad)} refused ({bad[:3]})" if bad else ""
    failed = f", {root.reports_failed} not delivered" if root.reports_failed else ""
    print(
        f"mesh view GET /api/meshota/v1/management/mesh: {root.reports_sent} progress reports "
        f"({root.report_bytes} bytes; room {root.device.mesh_report_room()} B per report) from the root "
        f"over its MQTT-SN session{refused}{failed}, "
        f"{len(roots)} root(s) in {len(streams)} stream(s)"
    )
    for r in roots:
        states: dict[str, int] = {}
        for n in r["nodes"]:
            states[n["state"]] = states.get(n["state"], 0) + 1
        shown = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        print(
            f"          reported by root {name_of.get(r['root'], r['root'][:8])}: {r['members']} nodes "
            f"({len(r['nodes'])} listed: {shown}), {r['blocks']} blocks, round {r['rounds']}, "
            f"{r['bytes_on_air']:,} B in {r['frames_on_air']:,} frames on air"
            + (", ended complete" if r["complete"] else ", ended incomplete" if r["final"] else ", running")
        )


async def _wait_final(
    op: Operator, fleet: Fleet, deployment: str, nodes: int, timeout: float
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        stats = await op.statistics(deployment)
        done = stats.get("success", 0) + stats.get("failure", 0) >= nodes and not fleet.reports_pending()
        if done and not fleet.counting_pending():
            return stats
        if time.monotonic() > deadline:
            return stats  # the summary says what is missing
        await asyncio.sleep(0.2)


def _summary(
    fleet: Fleet,
    inp: _Inputs,
    addr: StackAddresses,
    group: tuple[str, int],
    deployment: str,
    stats: dict[str, int],
    listing: dict[str, str],
    by_name: dict[str, str],
    view: dict[str, Any],
    slot: int,
    image_ok: object,
    t0: float,
    t_ota: float,
) -> int:
    assert fleet.root is not None and fleet.collector is not None and callable(image_ok)
    root, collector = fleet.root, fleet.collector
    nodes = fleet.nodes
    root_dev = fleet.devices[fleet.root_name]
    print(
        f"stream    the root fetched the artifact and its chunk map {root.core.fetches}x "
        f"({root_dev.stats.download_bytes:,} B block-wise over MQTT-SN) and streamed "
        f"{root.core.bytes_sent:,} B in {root.core.frames_sent:,} frames over UDP multicast "
        f"{group[0]}:{group[1]} on lo ({time.perf_counter() - t_ota:.1f} s)"
    )
    checks = {name: check_flash(inp.work / "nodes" / name, slot, image_ok, inp.image) for name in nodes}
    chunks = sum(n.chunks_verified for n in nodes.values())
    installed = sum(c.ok for c in checks.values())
    print(
        f"nodes     {installed}/{len(nodes)} hold {NEW} in their file flash ({inp.work / 'nodes'}/NAME/"
        f"slot{{0,1}}.bin), {chunks:,} chunks verified against the signed chunk map, "
        f"{sum(n.reboots for n in nodes.values())} reboots into the new image"
    )
    inventory = sum(len(n.inventory_reports) for n in nodes.values())
    direct = sum(n.direct_reports for n in nodes.values())
    print(
        f"statuses  {sum(n.sealed_reports for n in nodes.values())} sealed status records in "
        f"{len(collector.batch_sizes)} batches through the root ({direct} sent on a node's own session); "
        f"{inventory} inventory reports at level minimal in the same batches"
    )
    _print_counting(fleet)
    _print_mesh(fleet, view, by_name)
    print(f"\n{'node':<9} {'device':<9} {'status':<12} {'chunks':>6}  flash (read back from its files)")
    for name, node in nodes.items():
        c = checks[name]
        flash = f"slot {c.slot}: {c.artifact}, signature ok" if c.ok else f"BAD: {c.detail}"
        status = listing.get(by_name[name], "missing")
        print(f"{name:<9} {by_name[name][:8]:<9} {status:<12} {node.chunks_verified:>6}  {flash}")
    shown = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if v)
    print(
        f"\nmanagement API  GET /api/management/v1/deployments/deployments/{deployment}/statistics: {shown}"
    )
    ok = (
        stats.get("success", 0) == len(nodes)
        and all(listing.get(by_name[n]) == "success" for n in nodes)
        and installed == len(nodes)
    )
    print(
        f"\n{'every node installed the signed image' if ok else 'SOME NODES DID NOT INSTALL'}: "
        f"server statistics say success {stats.get('success', 0)}/{len(nodes)} "
        f"(wall {time.perf_counter() - t0:.1f} s, server side: {addr.http})"
    )
    return 0 if ok else 1
