"""Baselines on the same topology, tree, link losses and radio profile as the group stream.

- unicast: every node downloads the image over its own end-to-end session (DTLS 1.2 record and
  MQTT-SN header per datagram), hop by hop along its path with link ACKs and MAC retries.
- mupgrade: ESP-MDF Mupgrade-style: the root sends each chunk once per tree link (per-child unicast
  fan-out, link ACKs), then rounds of status request, 512 B bitmap reports, and a resend of the
  union of every node's misses to all unfinished nodes.
- lower bound: image bytes × forwarding nodes (and the same in whole frames on air).

Every method carries the image in datagrams of the same ``chunk`` payload bytes the group stream
uses (6LoWPAN-fragmented on 802.15.4, link ACK and retries per fragment for unicast), over the same
tree and link losses. Frame counts are drawn per link from the loss model (seeded numpy negative
binomial: attempts until success); completion time is the airtime of the busiest neighbourhood
(every frame its members send or hear has to fit in one channel); per node, the busiest
neighbourhood on its path to the root (:func:`fluid_completion`). Energy: mesh_sim/energy.py, from
the per-node tx/rx airtime kept here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from .election import MeshTree
from .params import E2E_HEADER, REQUEST_BYTES
from .radio import RadioProfile
from .topology import Topology

__all__ = [
    "DATA_HEADER",
    "BaselineResult",
    "busiest_neighbourhood",
    "fluid_completion",
    "lower_bound",
    "mupgrade",
    "unicast",
]

DATA_HEADER = 14  # group-link DATA frame: magic, type, stream id (8), block (4); Mupgrade's is similar


@dataclass
class BaselineResult:
    name: str
    bytes_on_air: int
    frames: int
    completion_s: float
    rounds: int = 1
    tx_s: list[float] = field(default_factory=list, repr=False)  # per node: airtime sent
    rx_s: list[float] = field(default_factory=list, repr=False)  # per node: airtime received
    done_s: list[float] = field(default_factory=list, repr=False)  # per node: holds the image (fluid)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "bytes_on_air": self.bytes_on_air,
            "frames": self.frames,
            "completion_s": self.completion_s,
            "rounds": self.rounds,
        }


def neighbourhood_loads(topo: Topology, airtime_per_node: list[float]) -> list[float]:
    """Per node: the airtime it and its neighbours transmit (one shared channel)."""
    return [
        airtime_per_node[u] + sum(airtime_per_node[v] for v, _ in topo.adjacency[u]) for u in range(topo.n)
    ]


def busiest_neighbourhood(topo: Topology, airtime_per_node: list[float]) -> float:
    """Max over nodes of the airtime it and its neighbours transmit (one shared channel)."""
    return max(neighbourhood_loads(topo, airtime_per_node), default=0.0)


def fluid_completion(topo: Topology, tree: MeshTree, airtime_per_node: list[float]) -> list[float]:
    """Per node, in a baseline's fluid model: its data flows through every neighbourhood on its
    path to the root, so it holds the image when the busiest of them has drained."""
    load = neighbourhood_loads(topo, airtime_per_node)
    out = [0.0] * topo.n
    for v in tree.order:  # parents before children
        p = tree.parent[v]
        out[v] = max(load[v], out[p]) if p >= 0 else load[v]
    return out


class _Ledger:
    def __init__(self, topo: Topology, profile: RadioProfile) -> None:
        self.p = profile
        self.topo = topo
        self.tx_air = [0.0] * topo.n
        self.rx_air = [0.0] * topo.n
        self.bytes = 0
        self.frames = 0
        self._shapes: dict[tuple[int, ...], tuple[float, float, float]] = {}

    def _shape(self, frames: list[int]) -> tuple[float, float, float]:
        """(mean frame, mean airtime with its slot, an ACK's airtime with its slot), once per shape."""
        key = tuple(frames)
        shape = self._shapes.get(key)
        if shape is None:
            p = self.p
            shape = self._shapes[key] = (
                sum(frames) / len(frames),
                sum(p.airtime(f) + p.slot for f in frames) / len(frames),
                p.airtime(p.ack_bytes) + p.slot,
            )
        return shape

    def link(self, a: int, b: int, frames: list[int], count: int, rng: np.random.Generator) -> None:
        """``count`` datagrams a→b (each ``frames`` fragments) delivered with per-fragment link ACKs."""
        if count <= 0:
            return
        loss = self.topo.loss(a, b)
        sent = count * len(frames)
        attempts = sent + (int(rng.negative_binomial(sent, 1.0 - loss)) if loss else 0)
        p = self.p
        mean_frame, air, ack = self._shape(frames)
        self.tx_air[a] += attempts * air
        self.rx_air[b] += attempts * air
        self.tx_air[b] += sent * ack
        self.rx_air[a] += sent * ack
        self.frames += attempts + sent
        self.bytes += round(attempts * (mean_frame + p.phy_overhead)) + sent * (p.ack_bytes + p.phy_overhead)

    def links(self, items: list[tuple[int, int, list[int], int]], rng: np.random.Generator) -> None:
        """:meth:`link` for each ``(a, b, frames, count)`` in order, with numpy: the same draws
        from ``rng`` in the same order and the same sums, added in the same order (bit for bit
        what the calls one by one give; tests/mesh_sim/test_baselines.py)."""
        items = [it for it in items if it[3] > 0]
        if not items:
            return
        p = self.p
        shapes = [(*self._shape(frames), len(frames)) for _a, _b, frames, _c in items]
        loss_of = self.topo.loss
        a = np.fromiter((it[0] for it in items), np.int64, len(items))
        b = np.fromiter((it[1] for it in items), np.int64, len(items))
        loss = np.fromiter((loss_of(it[0], it[1]) for it in items), np.float64, len(items))
        shape_arr = np.array(shapes, dtype=np.float64)
        mean_frame, air, ack = shape_arr[:, 0], shape_arr[:, 1], shape_arr[:, 2]
        sent = np.fromiter((it[3] for it in items), np.int64, len(items)) * shape_arr[:, 3].astype(np.int64)
        attempts = sent.copy()
        lossy = loss != 0.0
        if lossy.any():
            attempts[lossy] += rng.negative_binomial(sent[lossy], 1.0 - loss[lossy]).astype(np.int64)
        tx = np.array(self.tx_air)
        rx = np.array(self.rx_air)
        data_air, ack_air = attempts * air, sent * ack
        np.add.at(tx, np.column_stack((a, b)).ravel(), np.column_stack((data_air, ack_air)).ravel())
        np.add.at(rx, np.column_stack((b, a)).ravel(), np.column_stack((data_air, ack_air)).ravel())
        self.tx_air = tx.tolist()
        self.rx_air = rx.tolist()
        self.frames += int((attempts + sent).sum())
        self.bytes += int(np.rint(attempts * (mean_frame + p.phy_overhead)).astype(np.int64).sum()) + int(
            (sent * (p.ack_bytes + p.phy_overhead)).sum()
        )

    def result(self, name: str, tree: MeshTree, rounds: int = 1) -> BaselineResult:
        return BaselineResult(
            name,
            self.bytes,
            self.frames,
            busiest_neighbourhood(self.topo, self.tx_air),
            rounds,
            list(self.tx_air),
            list(self.rx_air),
            fluid_completion(self.topo, tree, self.tx_air),
        )


def _frame_geometry(
    profile: RadioProfile, image_size: int, chunk: int, secure: bool
) -> tuple[list[int], int]:
    """Fragments of one image datagram, and how many datagrams carry the image."""
    header = DATA_HEADER + (E2E_HEADER if secure else 0)
    return profile.frames_of(header + chunk), math.ceil(image_size / chunk)


def unicast(
    topo: Topology, tree: MeshTree, profile: RadioProfile, image_size: int, chunk: int, seed: int
) -> BaselineResult:
    rng = np.random.default_rng(seed)
    frame, count = _frame_geometry(profile, image_size, chunk, secure=True)
    request = profile.frames_of(E2E_HEADER + REQUEST_BYTES)
    ledger = _Ledger(topo, profile)
    per_req = 4  # one request per window of 4 chunks (CoAP block-wise / MQTT-SN request style)
    items: list[tuple[int, int, list[int], int]] = []
    for v in tree.order:
        if tree.parent[v] < 0:
            continue
        path = tree.path_to_root(v)
        for a, b in pairwise(path):
            items.append((b, a, frame, count))  # data down
            items.append((a, b, request, math.ceil(count / per_req)))  # requests up
    ledger.links(items, rng)
    return ledger.result("unicast", tree)


def mupgrade(
    topo: Topology,
    tree: MeshTree,
    profile: RadioProfile,
    image_size: int,
    chunk: int,
    seed: int,
    max_rounds: int = 20,
) -> BaselineResult:
    """Per-child unicast fan-out with link ACKs; union-of-misses resend rounds."""
    rng = np.random.default_rng(seed)
    frame, count = _frame_geometry(profile, image_size, chunk, secure=False)
    p = profile
    ledger = _Ledger(topo, profile)
    links = [(tree.parent[v], v) for v in tree.order if tree.parent[v] >= 0]
    residual = {(a, b): 1.0 - (1.0 - topo.loss(a, b) ** (p.mac_retries + 1)) ** len(frame) for a, b in links}
    unfinished = {v for v in tree.order if tree.parent[v] >= 0}
    to_send = count
    rounds = 0
    status_frame = p.frames_of(16)
    report = p.frames_of(512 + 48)  # Mupgrade status: name, sizes, 512 B bitmap
    # missing[v]: count of chunks v misses after a round, drawn per hop (a miss on a hop is a miss below)
    while to_send and unfinished and rounds < max_rounds:
        rounds += 1
        missed_at: dict[int, int] = {}
        for a, b in links:
            if b not in unfinished:
                continue
            ledger.link(a, b, frame, to_send, rng)
            upstream = missed_at.get(a, 0)
            missed_at[b] = min(to_send, upstream + int(rng.binomial(to_send - upstream, residual[(a, b)])))
        # status request fan-out, then each unfinished node's bitmap report up its path
        for a, b in links:
            if b in unfinished:
                ledger.link(a, b, status_frame, 1, rng)
        ledger.links(
            [(a, b, report, 1) for v in list(unfinished) for a, b in pairwise(tree.path_to_root(v))], rng
        )
        union_fraction = 1.0 - math.prod(1.0 - missed_at.get(v, 0) / to_send for v in unfinished)
        next_send = round(to_send * union_fraction)
        unfinished = {v for v in unfinished if missed_at.get(v, 0)}
        to_send = next_send if unfinished else 0
    return ledger.result("mupgrade", tree, rounds)


def lower_bound(profile: RadioProfile, image_size: int, chunk: int, forwarders: int) -> dict[str, float]:
    frame, count = _frame_geometry(profile, image_size, chunk, secure=False)
    on_air = sum(f + profile.phy_overhead for f in frame)
    return {
        "payload_bytes": float(image_size * forwarders),
        "frames": float(count * len(frame) * forwarders),
        "frame_bytes_on_air": float(count * on_air * forwarders),
        "completion_s": count * sum(profile.airtime(f) + profile.slot for f in frame),
    }
