"""Up frames relays pack on the way to the root (SPEC.md §5.1, mesh_sim/routes.py): the radio model
and a whole run."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

from firmware_proto.sealed_uplink import MAX_PACKED, packed_frame_len
from mesh_sim.clock import EventClock
from mesh_sim.group import status_frame_len
from mesh_sim.radio import PROFILES, Radio
from mesh_sim.routes import Hop
from mesh_sim.runner import run_scenario
from mesh_sim.scenario import parse_scenario
from mesh_sim.topology import Topology

SCENARIO = Path(__file__).resolve().parents[2] / "mesh_sim" / "scenarios" / "random-100-multihop.toml"


def _line(n: int, profile: str = "wifi-mesh", loss: float = 0.0) -> tuple[Radio, EventClock]:
    topo = Topology.from_links(
        "line", [(float(i), 0.0) for i in range(n)], [(i, i + 1, loss) for i in range(n - 1)]
    )
    radio = Radio(topo, PROFILES[profile], random.Random(3))
    clock = EventClock()
    radio.attach(clock, lambda r, s, d: None, lambda v: None)
    return radio, clock


def _send(
    radio: Radio, path: list[int], size: int, results: list[tuple[int, bool]], i: int, *, up: bool
) -> None:
    radio.send_path(
        path, size, lambda ok: results.append((i, ok)), kind="status", record=size - 2 if up else None
    )


def test_records_that_meet_a_waiting_frame_ride_in_it() -> None:
    """Nodes 0..3 of a line each send a record to the root (node 4) at once: every frame that
    waits at a node carries what reaches it meanwhile; each record's done is told once, True."""
    radio, clock = _line(5)
    size = status_frame_len("dep-1", "downloading")
    results: list[tuple[int, bool]] = []
    for v in range(4):
        _send(radio, list(range(v, 5)), size, results, v, up=True)
    clock.run()
    assert sorted(results) == [(v, True) for v in range(4)]
    sent = radio.frames_by_kind["status"]  # (each hop: a frame and its link ACK, no loss here)
    assert sent <= 2 * (4 + 3 + 2 + 1) - 2 * 3  # at least three hops saved
    # the same four without ``record``: one frame per record and hop, never packed
    radio2, clock2 = _line(5)
    results2: list[tuple[int, bool]] = []
    for v in range(4):
        _send(radio2, list(range(v, 5)), size, results2, v, up=False)
    clock2.run()
    assert sorted(results2) == [(v, True) for v in range(4)]
    assert radio2.frames_by_kind["status"] == 2 * (4 + 3 + 2 + 1)
    assert radio.bytes_by_kind["status"] < radio2.bytes_by_kind["status"]


def _waiting(radio: Radio, node: int) -> list[tuple[int, list[int]]]:
    """(datagram size, record lengths) of the up frames waiting in ``node``'s transmit queue."""
    out = []
    for entry in radio.queues[node]:
        hop, size = entry[4], entry[2]
        assert isinstance(hop, Hop) and hop.route.lengths is not None and isinstance(size, int)
        out.append((size, hop.route.lengths))
    return out


def test_a_packed_frame_is_the_product_s_length_and_fits_the_datagram() -> None:
    radio, clock = _line(2, "802.15.4")
    size = 120
    room = radio.profile.datagram_room()
    n = 40  # more than one datagram holds: the rest wait for the next frame
    results: list[tuple[int, bool]] = []
    for i in range(n):
        _send(radio, [0, 1], size, results, i, up=True)
    waiting = _waiting(radio, 0)  # the first record went on air at once; the others packed as they came
    assert results == [] and len(waiting) >= 2  # (n - 1) records did not fit one frame
    for frame_size, lengths in waiting:
        assert frame_size == packed_frame_len(lengths) <= room and lengths == [size - 2] * len(lengths)
    assert sum(len(lengths) for _, lengths in waiting) == n - 1
    clock.run()
    assert sorted(results) == [(i, True) for i in range(n)]


def test_a_failed_packed_frame_fails_every_record_it_carries() -> None:
    radio, clock = _line(3)
    radio.power(2, False)  # the root is down: the last hop runs out of MAC retries
    size = status_frame_len("dep-1", "success")
    results: list[tuple[int, bool]] = []
    for i in range(5):
        _send(radio, [0, 1, 2], size, results, i, up=True)
    clock.run()
    assert sorted(results) == [(i, False) for i in range(5)]


def test_never_more_records_than_a_packed_frame_counts() -> None:
    radio, clock = _line(2)
    results: list[tuple[int, bool]] = []
    for i in range(2 * MAX_PACKED + 5):
        _send(radio, [0, 1], 3, results, i, up=True)  # tiny records: the count caps, not the room
    waiting = _waiting(radio, 0)
    assert [len(lengths) for _, lengths in waiting] == [MAX_PACKED, MAX_PACKED, 4]
    clock.run()
    assert len(results) == 2 * MAX_PACKED + 5 and all(ok for _, ok in results)


@pytest.mark.parametrize("profile", ["wifi-mesh", "802.15.4"])
def test_every_status_reaches_the_server_and_relays_pack(profile: str) -> None:
    sc = tomllib.loads(SCENARIO.read_text())
    sc["radio"]["profile"] = profile
    res = run_scenario(parse_scenario(sc))
    assert res.summary["installed"] == 100
    sim, tree = res.stream, res.tree
    res.clock.run(until=res.clock.now + 120.0)  # the run stops at the last final status: let the
    # statuses still on their way arrive
    statuses = sim.service.statuses
    for v, node in enumerate(sim.nodes):  # every status the agent reported got to the server
        assert node.reported and {s for _dep, s in statuses.get(v, [])} == set(node.reported)
    hops = sum(tree.depth[v] * len(node.reported) for v, node in enumerate(sim.nodes))
    # one by one, each record crosses depth hops, each a frame and its link ACK at least (more with
    # MAC retries and failed routes): 2 × hops frames is the floor packing must go below
    assert res.radio.frames_by_kind["status"] < 2 * hops
