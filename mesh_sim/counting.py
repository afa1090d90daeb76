"""Weekly counting over a lossy multi-hop mesh, on the simulator's clock (issue 18 part 4).

The same sans-I/O objects as the firmware and the live demo: every node runs a
:class:`~firmware_proto.counting.NodeCounter` over its own flash, every root a
:class:`~firmware_proto.counting.RootCounter`. Reports and acknowledgements travel hop by hop
along the routing tree (:func:`mesh_sim.election.elect`), each hop a link-layer unicast with MAC
retries over the topology's lossy links (:meth:`Radio.unicast_path`), so some are lost end to end
and the nodes resend. When a week ends each root seals its count records with its own record key
(:class:`~firmware_proto.sealed_uplink.SealedRecordSender`, ``RecordOp.COUNT``) and sends them to
the gateway; the uplink loses ``uplink_loss`` of the server's answers, so roots re-send, and the
modelled server adds a record once per (root, window, cell), as the real one does.

Faults: ``root_reboots`` (times at which every root loses its RAM and restarts from its flash) and
``node_reboots`` (node, time) pairs. The gateway sees only what roots send: :class:`CountingResult`
says how many messages reached it and of which kind.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from firmware_proto.counting import NodeCounter, RootCounter
from firmware_proto.inventory_levels import NodeInventory
from firmware_proto.sealed_uplink import SealedRecordSender
from firmware_proto.testing.flash import MemoryFlash
from wire.countme import REPORT, decode_count_record, window_of, window_start
from wire.sealed import RecordOp, decode_request, derive_record_key, open_record

from .clock import EventClock
from .election import elect
from .radio import PROFILES, Radio
from .topology import Topology

__all__ = ["CountingResult", "run_counting"]


@dataclass
class CountingResult:
    roots: list[int]
    windows: list[int]
    counted: dict[int, int]  # window -> nodes the server's mesh series added up
    counted_by_cell: dict[int, dict[tuple[int, str, str], int]]
    nodes_acknowledged: dict[int, int]  # window -> nodes whose report their root acknowledged
    gateway_messages: Counter[str] = field(default_factory=Counter)  # kind -> messages at the gateway
    report_frames: int = 0  # reports sent by nodes (first tries and resends)
    report_frames_lost: int = 0  # reports lost on the way to their root
    acks_lost: int = 0
    refused: int = 0  # reports the root refused (another window, or full)
    max_hops: int = 0
    trace: str = ""


def _inventory(i: int) -> NodeInventory:
    return NodeInventory("esp32-c6" if i % 3 else "nrf52840", "fw-1.0" if i % 4 else "fw-1.1")


def run_counting(
    topo: Topology,
    *,
    weeks: int = 2,
    first_window: int = 2950,
    seed: int = 0,
    profile: str = "802.15.4",
    uplink_loss: float = 0.3,
    root_reboots: tuple[float, ...] = (),
    node_reboots: tuple[tuple[int, float], ...] = (),
    spread: float = 6 * 3600.0,
) -> CountingResult:
    """Count every node of ``topo`` for ``weeks`` windows starting at ``first_window``."""
    rng = random.Random(seed)
    clock = EventClock()
    radio = Radio(topo, PROFILES[profile], random.Random(seed + 1))
    tree = elect(topo, [True] * topo.n)
    roots = list(tree.roots)
    flashes = [MemoryFlash(1 << 16) for _ in range(topo.n)]
    keys = {r: derive_record_key(f"root-{r}", bytes([r % 251 + 1]) * 16) for r in roots}
    senders = {r: SealedRecordSender(keys[r], flashes[r]) for r in roots}
    nodes: dict[int, NodeCounter] = {}
    rcount: dict[int, RootCounter] = {}
    result = CountingResult(roots, [first_window + w for w in range(weeks)], {}, {}, {})
    server_seen: set[tuple[str, int, int, str, str]] = set()
    acked: dict[int, set[int]] = {}
    node_timer: dict[int, float | None] = {}
    root_timer: dict[int, float | None] = {}
    end = float(window_start(first_window + weeks)) + 3600.0
    result.max_hops = max(len(tree.path_to_root(i)) - 1 for i in range(topo.n))

    def new_node(i: int) -> NodeCounter:
        return NodeCounter(flashes[i], _inventory(i), random.Random(seed * 7919 + i), spread=spread)

    def arm_node(i: int) -> None:
        at = nodes[i].next_timer()
        if at is not None and at != node_timer.get(i):
            node_timer[i] = at
            clock.at(at, node_fire, i, at)

    def arm_root(r: int) -> None:
        at = rcount[r].next_timer()
        if at is not None and at != root_timer.get(r):
            root_timer[r] = at
            clock.at(at, root_fire, r, at)

    def node_fire(i: int, at: float) -> None:
        if node_timer.get(i) != at:
            return  # superseded
        node_timer[i] = None
        node = nodes[i]
        node.handle_timer(clock.now)
        for frame in node.frames_to_send():
            result.report_frames += 1
            path = tree.path_to_root(i)
            root = path[-1]
            if i == root:  # the root's own report stays in the root
                clock.at(clock.now, root_receive, root, frame, i)
                continue
            t, ok = radio.unicast_path(path, len(frame), clock.now)
            if ok:
                clock.at(t, root_receive, root, frame, i)
            else:
                result.report_frames_lost += 1
        arm_node(i)

    def root_receive(r: int, frame: bytes, sender: int) -> None:
        assert frame[1] == REPORT
        rcount[r].receive(frame, sender, clock.now)
        root_pump(r)

    def root_fire(r: int, at: float) -> None:
        if root_timer.get(r) != at:
            return
        root_timer[r] = None
        rcount[r].handle_timer(clock.now)
        root_pump(r)

    def root_pump(r: int) -> None:
        for child, frame in rcount[r].frames_to_send():
            assert isinstance(child, int)
            if child == r:
                clock.at(clock.now, node_ack, child, frame)
                continue
            t, ok = radio.unicast_path(list(reversed(tree.path_to_root(child))), len(frame), clock.now)
            if ok:
                clock.at(t, node_ack, child, frame)
            else:
                result.acks_lost += 1
        for record in rcount[r].pending():
            clock.at(clock.now + 0.05, uplink, r, record)
        arm_root(r)

    def node_ack(i: int, frame: bytes) -> None:
        nodes[i].receive(frame, clock.now)
        window = nodes[i].acked_window
        if nodes[i].counted and window is not None:
            acked.setdefault(window, set()).add(i)
        arm_node(i)

    inflight: set[tuple[int, bytes]] = set()

    def uplink(r: int, record: bytes) -> None:
        """The root seals ``record`` and sends it to the gateway; the server adds it once."""
        if (r, record) in inflight or record not in rcount[r].pending():
            return
        inflight.add((r, record))
        _, frame = senders[r].seal(RecordOp.COUNT, "", record)
        _, _, plain = open_record([keys[r]], frame[2:])  # the gateway's bridge opens it
        op, _, body = decode_request(plain)
        result.gateway_messages[op.name] += 1
        assert isinstance(body, bytes)
        rec = decode_count_record(body)
        key = (keys[r].device_id, rec.window, rec.bucket, rec.version, rec.device_type)
        if key not in server_seen:
            server_seen.add(key)
            result.counted[rec.window] = result.counted.get(rec.window, 0) + rec.count
            cells = result.counted_by_cell.setdefault(rec.window, {})
            cell = (rec.bucket, rec.version, rec.device_type)
            cells[cell] = cells.get(cell, 0) + rec.count
        clock.trace("uplink", r, rec.window, rec.count)
        if rng.random() < uplink_loss:  # the answer is lost: the root tries again later
            clock.at(clock.now + 30.0, retry_uplink, r, record)
            return
        clock.at(clock.now + 0.05, answered, r, record)

    def retry_uplink(r: int, record: bytes) -> None:
        inflight.discard((r, record))
        uplink(r, record)

    def answered(r: int, record: bytes) -> None:
        inflight.discard((r, record))
        rcount[r].delivered(record)
        arm_root(r)

    def reboot_roots() -> None:
        for r in roots:
            rcount[r] = RootCounter(flashes[r])  # RAM lost: held acknowledgements, timers
            senders[r] = SealedRecordSender(keys[r], flashes[r])
            root_timer[r] = None
            nodes[r] = new_node(r)
            nodes[r].handle_timer(clock.now)
            arm_node(r)
            arm_root(r)
            for record in rcount[r].pending():
                clock.at(clock.now + 1.0, uplink, r, record)
        inflight.clear()

    def reboot_node(i: int) -> None:
        nodes[i] = new_node(i)
        node_timer[i] = None
        nodes[i].handle_timer(clock.now)
        arm_node(i)

    start = float(window_start(first_window))
    for r in roots:
        rcount[r] = RootCounter(flashes[r])
    for i in range(topo.n):
        nodes[i] = new_node(i)
        nodes[i].handle_timer(start + rng.uniform(0, 60))
        arm_node(i)
    for at in root_reboots:
        clock.at(start + at, reboot_roots)
    for i, at in node_reboots:
        clock.at(start + at, reboot_node, i)
    clock.run(until=end)
    result.refused = sum(n.refused for n in nodes.values())
    for w in result.windows:
        result.nodes_acknowledged[w] = len(acked.get(w, set()))
    assert all(window_of(end) > w for w in result.windows)
    result.trace = clock.trace_hash()
    return result
