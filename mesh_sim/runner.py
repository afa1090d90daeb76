"""Run one scenario: control plane (collection window), group stream with faults, baselines."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import baselines as bl
from .chunks import ChunkMap, split_image
from .clock import EventClock
from .control import ControlPlane
from .election import MeshTree, elect
from .radio import PROFILES, Radio
from .scenario import Scenario
from .stream import CHUNK_HEADER, MQTTSN_PUBLISH_HEADER, GroupStream, RootBehaviour, StreamConfig
from .topology import Topology, build_topology

__all__ = ["RunResult", "run_scenario"]


@dataclass
class RunResult:
    scenario: Scenario
    topology: Topology
    tree: MeshTree  # as elected at the start
    radio: Radio
    stream: GroupStream
    control: ControlPlane | None
    stream_start: float
    trace_hash: str
    wall_s: float
    summary: dict[str, Any] = field(default_factory=dict)


def _deterministic_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(random.Random(f"key-{seed}").randbytes(32))


def run_scenario(
    sc: Scenario,
    seed: int | None = None,
    *,
    progress: Callable[[float, float], None] | None = None,
    control_plane: bool = True,
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

    control: ControlPlane | None = None
    if control_plane:
        control = ControlPlane(clock, radio, tree, sc.artifact)
        control.start(spread=sc.window / 2)
    clock.run(until=sc.window)
    start = sc.window

    key = _deterministic_key(seed)
    image = random.Random(f"image-{seed}").randbytes(sc.image_size)
    room = profile.payload_room() - MQTTSN_PUBLISH_HEADER - CHUNK_HEADER
    chunk_map = ChunkMap.build(image, room, sc.seq, key)
    behaviours: dict[int, RootBehaviour] = {}
    for f in sc.faults:
        if f.kind != "malicious_root":
            continue
        root = _root_of_submesh(topo, tree, f.submesh)
        b = behaviours.setdefault(root, RootBehaviour())
        if f.mode == "tamper":
            b.tamper_fraction = f.fraction
            b.tamper_map = f.fraction >= 1.0
        elif f.mode == "withhold":
            b.withhold_from = 1.0 - f.fraction
        else:  # replay an older, validly signed image
            old = random.Random(f"old-image-{seed}").randbytes(sc.image_size)
            b.replay = ChunkMap.build(old, room, sc.seq - 1, key)
            b.replay_chunks = split_image(old, room)
    gs = GroupStream(
        clock,
        radio,
        tree,
        chunk_map,
        split_image(image, room),
        key.public_key(),
        StreamConfig(max_rounds=sc.max_rounds, stall_rounds=sc.stall_rounds, heal_delay=sc.heal_delay),
        min_seq=sc.seq,
    )
    clock.at(start, gs.start, behaviours)
    for f in sc.faults:
        if f.kind == "root_dies":
            clock.at(start + f.at, lambda m=f.submesh: gs.node_down(_root_of_submesh(topo, gs.tree, m)))
        elif f.kind == "node_reboots":
            node = (
                f.node
                if f.node >= 0
                else max(
                    (v for v in range(topo.n) if tree.parent[v] >= 0),
                    key=lambda v: (len(tree.children[v]), -v),
                )
            )
            clock.at(start + f.at, lambda v=node: gs.node_down(v, comes_back=True))
            clock.at(start + f.at + f.duration, gs.node_up, node)
    bound = 0.0
    if progress is not None:
        bound = bl.lower_bound(profile, sc.image_size, len(tree.forwarders()))["completion_s"] * 3 + start

        def step(now: float) -> None:
            progress(now, bound)

        clock.run(on_step=step)
        progress(clock.now, clock.now)
    else:
        clock.run()
    res = RunResult(sc, topo, tree, radio, gs, control, start, clock.trace_hash(), 0.0)
    from .metrics import summarize

    res.summary = summarize(res, seed)
    res.wall_s = time.perf_counter() - wall0
    res.summary["wall_s"] = round(res.wall_s, 3)
    return res


def _root_of_submesh(topo: Topology, tree: MeshTree, submesh: int) -> int:
    for r in tree.roots:
        if topo.submesh[r] == submesh:
            return r
    return tree.roots[0]
