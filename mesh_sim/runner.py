"""Run one scenario: control plane (nodes learn of the deployment), the product's group stream over
the radio with faults, then the baselines on the same topology, tree, losses and frame sizes."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_proto.testing.group import MemoryDeviceService

from .baselines import DATA_HEADER
from .clock import EventClock
from .control import ControlPlane
from .election import MeshTree, elect
from .faults import RootFault
from .group import GroupSim
from .metrics import summarize
from .params import GroupParams
from .radio import PROFILES, Radio, RadioProfile
from .result import RunResult
from .scenario import Scenario
from .sizing import GROUP_DATA_FRAMES, GROUP_PARTS, default_chunk_size, part_chunk_size, part_room
from .topology import Topology, build_topology

__all__ = ["ServerSide", "run_scenario", "signed_image"]

SIM_TIME_CAP = 6 * 3600.0


def _key(label: str, seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(random.Random(f"{label}-{seed}").randbytes(32))


def signed_image(payload: bytes, vendor: Ed25519PrivateKey) -> bytes:
    """A vendor-signed image: payload then an Ed25519 signature over it (secure-boot style)."""
    return payload + vendor.sign(payload)


def vendor_check(vendor: Ed25519PrivateKey) -> Callable[[bytes], bool]:
    public = vendor.public_key()

    seen: dict[bytes, bool] = {}  # the check is a pure function of the bytes: run once per image

    def image_ok(image: bytes) -> bool:
        image = bytes(image)
        known = seen.get(image)
        if known is not None:
            return known
        ok = len(image) >= 64
        if ok:
            try:
                public.verify(image[-64:], image[:-64])
            except InvalidSignature:
                ok = False
        if len(seen) < 16:
            seen[image] = ok
        return ok

    return image_ok


def _chunk(sc: Scenario, profile: RadioProfile, image_size: int) -> int:
    if sc.chunk_size:
        return sc.chunk_size
    room = part_room(profile, sc.parts)
    if room:
        return part_chunk_size(room, image_size, sc.part_count or GROUP_PARTS)
    return default_chunk_size(profile, image_size, GROUP_DATA_FRAMES)


def _params(sc: Scenario, profile: RadioProfile, chunk: int) -> GroupParams:
    datagrams = -(-sc.image_size // chunk)
    room = part_room(profile, sc.parts)
    frames = [profile.max_frame] * -(-chunk // room) if room else profile.frames_of(chunk + DATA_HEADER)
    one_hop = datagrams * sum(profile.airtime(f) + profile.slot for f in frames)
    reply = sc.reply_window_ms or (500 if profile.name == "wifi-mesh" else 1500)
    per_hop = 8 * one_hop + 6 * reply / 1000 + sc.relay_window + 2 * sc.want_interval
    return GroupParams(
        chunk_size=chunk,
        collection_window=sc.window,
        relay_window=sc.relay_window,
        reply_window_ms=reply,
        max_rounds=sc.max_rounds,
        quiet_rounds=sc.quiet_rounds,
        want_interval=sc.want_interval,
        want_max=sc.want_max,
        fallback_base=sc.window + 30.0 + 8 * one_hop,
        hop_budget=per_hop,
        heal_delay=sc.heal_delay,
        unicast_max=sc.unicast_max,
        part_room=room,
        bursts=sc.bursts,
        sleep=sc.sleep,
        uplink_pace=sc.uplink_pace,
    )


@dataclass
class ServerSide:
    """An external server side for :func:`run_scenario` (``meshota demo``: the real handlers).

    ``service`` answers chunk maps (and keeps the in-memory tallies); ``image`` is the artifact
    the deployment names, ``factory_image`` what every node runs at the start, both accepted by
    ``image_ok`` (the nodes' secure-boot check); maps verify with ``map_key``."""

    service: MemoryDeviceService
    artifact_id: str
    deployment_id: str
    image: bytes
    factory_image: bytes
    factory_name: str
    image_ok: Callable[[bytes], bool]
    map_key: object
    factory_sequence: int = 0
    on_status: Callable[[int, str, str], None] | None = None
    fetch_artifact: Callable[[int, str], bytes] | None = None
    # every streaming core's progress reports (wire/SPEC.md §7), nodes named by ``node_name``
    on_mesh_report: Callable[[int, bytes], None] | None = None
    node_name: Callable[[Hashable], str] = str


def run_scenario(
    sc: Scenario,
    seed: int | None = None,
    *,
    progress: Callable[[float, float], None] | None = None,
    control_plane: bool = True,
    server_side: ServerSide | None = None,
) -> RunResult:
    wall0 = time.perf_counter()
    seed = sc.seed if seed is None else seed
    topo = build_topology(
        sc.topology,
        sc.nodes,
        sc.loss,
        random.Random(f"topo-{seed}"),
        fanout=sc.fanout,
        degree=sc.degree,
        cols=sc.cols,
        file=sc.topology_file,
        submeshes=sc.submeshes,
    )
    profile = PROFILES[sc.profile]
    radio = Radio(topo, profile, random.Random(f"radio-{seed}"), collisions=sc.collisions)
    tree = elect(topo, radio.alive)
    clock = EventClock()
    clock.trace("topology", topo.n, len(topo.links()), tuple(tree.roots))

    vendor = _key("vendor", seed)
    server = MemoryDeviceService(_key("server", seed))
    image = signed_image(random.Random(f"image-{seed}").randbytes(max(1, sc.image_size - 64)), vendor)
    factory = signed_image(random.Random(f"factory-{seed}").randbytes(4096), vendor)
    server.add_artifact("art-2", sc.artifact, image)
    server.sequence = sc.seq - 1  # the next map the server signs carries sc.seq; nodes run sc.seq - 1
    chunk = _chunk(sc, profile, len(image))
    faults: dict[int, RootFault] = {}
    for f in sc.faults:
        if f.kind == "malicious_root":
            faults[_root_of_submesh(topo, tree, f.submesh)] = RootFault(f.mode, f.fraction)
    old = signed_image(random.Random(f"old-image-{seed}").randbytes(max(1, sc.image_size - 64)), vendor)
    ext = server_side
    if ext is not None:
        server = ext.service
        image, factory = ext.image, ext.factory_image
        chunk = _chunk(sc, profile, len(image))
    gs = GroupSim(
        clock,
        radio,
        tree,
        server,
        artifact_id="art-2" if ext is None else ext.artifact_id,
        deployment_id="dep-1" if ext is None else ext.deployment_id,
        params=_params(sc, profile, chunk),
        map_key=server.key.public_key() if ext is None else ext.map_key,
        image_ok=vendor_check(vendor) if ext is None else ext.image_ok,
        factory_image=factory,
        factory_name="firmware-1.0" if ext is None else ext.factory_name,
        factory_sequence=sc.seq - 1 if ext is None else ext.factory_sequence,
        seed=seed,
        root_faults=faults,
        old_artifact=old,
    )
    if ext is not None:
        gs.on_status = ext.on_status
        gs.fetch_artifact = ext.fetch_artifact
        gs.on_mesh_report = ext.on_mesh_report
        gs.node_name = ext.node_name
    gs.start()

    def schedule_faults() -> None:
        for f in sc.faults:
            if f.kind == "root_dies":
                clock.after(f.at, lambda m=f.submesh: gs.root_dies(_root_of_submesh(topo, gs.tree, m)))
            elif f.kind == "node_reboots":
                node = f.node if f.node >= 0 else _busiest_forwarder(tree)
                clock.after(f.at, gs.node_reboots, node, f.duration)

    gs.on_stream_start = schedule_faults
    control: ControlPlane | None = None
    spread = min(sc.window / 2, max(5.0, topo.n / 40))  # ~40 wake-ups/s: the root's channel keeps up
    if control_plane:
        control = ControlPlane(clock, radio, tree, sc.artifact)
        control.on_acked = gs.learn
        control.start(spread=spread)

        def late_learners() -> None:  # their own periodic ``next`` tells them (not modelled on air)
            for v in range(topo.n):
                if v not in gs.learned:
                    gs.learn(v)

        clock.at(sc.window, late_learners)
    else:
        for v in range(topo.n):
            clock.at(spread * v / topo.n, gs.learn, v)
    if progress is not None:
        from .baselines import lower_bound

        bound = 4 * lower_bound(profile, sc.image_size, chunk, len(tree.forwarders()))["completion_s"]
        bound += sc.window + spread

        def step(now: float) -> None:
            progress(now, bound)

        clock.run(until=SIM_TIME_CAP, on_step=step)
        progress(clock.now, clock.now)
    else:
        clock.run(until=SIM_TIME_CAP)
    start = gs.stream_start if gs.stream_start is not None else clock.now
    clock.trace("end", tuple(radio.bytes_tx))
    res = RunResult(sc, topo, tree, radio, gs, control, start, clock.trace_hash(), 0.0, clock)
    res.summary = summarize(res, seed)
    res.wall_s = time.perf_counter() - wall0
    res.summary["wall_s"] = round(res.wall_s, 3)
    return res


def _busiest_forwarder(tree: MeshTree) -> int:
    return max(
        (v for v in range(len(tree.parent)) if tree.parent[v] >= 0), key=lambda v: (len(tree.children[v]), -v)
    )


def _root_of_submesh(topo: Topology, tree: MeshTree, submesh: int) -> int:
    for r in tree.roots:
        if topo.submesh[r] == submesh:
            return r
    return tree.roots[0]
