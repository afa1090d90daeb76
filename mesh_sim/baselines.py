"""Baselines on the same topology, tree, link losses and radio profile as the group stream.

- unicast: every node downloads the image over its own end-to-end session (DTLS 1.2 record per
  frame), hop by hop along its path with link ACKs and MAC retries.
- mupgrade: ESP-MDF Mupgrade-style: the root sends each chunk once per tree link (per-child unicast
  fan-out, link ACKs), then rounds of status request, 512 B bitmap reports, and a resend of the
  union of every node's misses to all unfinished nodes.
- lower bound: image bytes × forwarding nodes (and the same in whole frames on air).

Frame counts are drawn per link from the loss model (seeded numpy negative binomial: attempts until
success); completion time is the airtime of the busiest neighbourhood (every frame its members send
or hear has to fit in one channel), the same estimate reported for the group stream.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import pairwise

import numpy as np

from .election import MeshTree
from .radio import RadioProfile
from .stream import CHUNK_HEADER, DTLS12_RECORD, MQTTSN_PUBLISH_HEADER
from .topology import Topology

__all__ = ["BaselineResult", "busiest_neighbourhood", "lower_bound", "mupgrade", "unicast"]


@dataclass
class BaselineResult:
    name: str
    bytes_on_air: int
    frames: int
    completion_s: float
    energy_mj: float
    rounds: int = 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def busiest_neighbourhood(topo: Topology, airtime_per_node: list[float]) -> float:
    """Max over nodes of the airtime it and its neighbours transmit (one shared channel)."""
    best = 0.0
    for u in range(topo.n):
        load = airtime_per_node[u] + sum(airtime_per_node[v] for v, _ in topo.adjacency[u])
        best = max(best, load)
    return best


class _Ledger:
    def __init__(self, topo: Topology, profile: RadioProfile) -> None:
        self.p = profile
        self.topo = topo
        self.tx_air = [0.0] * topo.n
        self.rx_air = [0.0] * topo.n
        self.bytes = 0
        self.frames = 0

    def link(self, a: int, b: int, frame: int, count: int, rng: np.random.Generator) -> None:
        """``count`` frames a→b delivered with link ACKs: attempts = count + failures."""
        if count <= 0:
            return
        loss = self.topo.loss(a, b)
        attempts = count + (int(rng.negative_binomial(count, 1.0 - loss)) if loss else 0)
        p = self.p
        air = p.airtime(frame) + p.slot
        ack = p.airtime(p.ack_bytes) + p.slot
        self.tx_air[a] += attempts * air
        self.rx_air[b] += attempts * air
        self.tx_air[b] += count * ack
        self.rx_air[a] += count * ack
        self.frames += attempts + count
        self.bytes += attempts * (frame + p.phy_overhead) + count * (p.ack_bytes + p.phy_overhead)

    def result(self, name: str, rounds: int = 1) -> BaselineResult:
        p = self.p
        energy = (
            sum(self.tx_air) * p.tx_current_ma * p.voltage + sum(self.rx_air) * p.rx_current_ma * p.voltage
        )
        return BaselineResult(
            name, self.bytes, self.frames, busiest_neighbourhood(self.topo, self.tx_air), energy, rounds
        )


def _frame_geometry(profile: RadioProfile, image_size: int, secure: bool) -> tuple[int, int, int]:
    header = profile.mac_header + profile.net_header + MQTTSN_PUBLISH_HEADER + CHUNK_HEADER
    if secure:
        header += DTLS12_RECORD
    room = profile.max_frame - header
    return header + room, math.ceil(image_size / room), room


def unicast(
    topo: Topology, tree: MeshTree, profile: RadioProfile, image_size: int, seed: int
) -> BaselineResult:
    rng = np.random.default_rng(seed)
    frame, count, _ = _frame_geometry(profile, image_size, secure=True)
    request = profile.mac_header + profile.net_header + DTLS12_RECORD + 16
    ledger = _Ledger(topo, profile)
    per_req = 4  # one request per window of 4 chunks (CoAP block-wise / MQTT-SN request style)
    for v in tree.order:
        if tree.parent[v] < 0:
            continue
        path = tree.path_to_root(v)
        for a, b in pairwise(path):
            ledger.link(b, a, frame, count, rng)  # data down
            ledger.link(a, b, request, math.ceil(count / per_req), rng)  # requests up
    return ledger.result("unicast")


def mupgrade(
    topo: Topology, tree: MeshTree, profile: RadioProfile, image_size: int, seed: int, max_rounds: int = 20
) -> BaselineResult:
    """Per-child unicast fan-out with link ACKs; union-of-misses resend rounds."""
    rng = np.random.default_rng(seed)
    frame, count, _ = _frame_geometry(profile, image_size, secure=False)
    p = profile
    ledger = _Ledger(topo, profile)
    links = [(tree.parent[v], v) for v in tree.order if tree.parent[v] >= 0]
    residual = {(a, b): topo.loss(a, b) ** (p.mac_retries + 1) for a, b in links}
    unfinished = {v for v in tree.order if tree.parent[v] >= 0}
    to_send = count
    rounds = 0
    status_frame = p.mac_header + p.net_header + 16
    report_bytes = 512 + 48  # Mupgrade status: name, sizes, 512 B bitmap
    report_frames = math.ceil(report_bytes / p.payload_room())
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
        for v in list(unfinished):
            path = tree.path_to_root(v)
            for a, b in pairwise(path):
                ledger.link(a, b, p.max_frame, report_frames, rng)
        union_fraction = 1.0 - math.prod(1.0 - missed_at.get(v, 0) / to_send for v in unfinished)
        next_send = round(to_send * union_fraction)
        unfinished = {v for v in unfinished if missed_at.get(v, 0)}
        to_send = next_send if unfinished else 0
    return ledger.result("mupgrade", rounds)


def lower_bound(profile: RadioProfile, image_size: int, forwarders: int) -> dict[str, float]:
    frame, count, _room = _frame_geometry(profile, image_size, secure=False)
    return {
        "payload_bytes": float(image_size * forwarders),
        "frames": float(count * forwarders),
        "frame_bytes_on_air": float(count * forwarders * (frame + profile.phy_overhead)),
        "completion_s": count * (profile.airtime(frame) + profile.slot),
    }
