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
from mesh_sim.scenario import ScenarioError, parse_scenario
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


def _send_paced(
    radio: Radio, path: list[int], size: int, results: list[tuple[int, float, bool]], i: int, pace: float
) -> None:
    clock = radio._clock
    assert clock is not None
    radio.send_path(
        path,
        size,
        lambda ok: results.append((i, clock.now, ok)),
        kind="status",
        record=size - 2,
        pace=pace,
        pace_first=True,
    )


def test_a_relay_holds_an_up_frame_for_its_pace_and_what_arrives_meanwhile_rides_along() -> None:
    """UplinkRelayUdp's rule (routes.hold): the frame leaves ``pace`` after its first record began
    to wait, with every record that came meanwhile and fits; a record that comes after it left
    starts the next frame, which leaves ``pace`` after that record came."""
    radio, clock = _line(2)
    pace = 0.05
    size = status_frame_len("dep-1", "downloading")
    results: list[tuple[int, float, bool]] = []
    for i in range(3):  # at 0, 10 and 20 ms: one frame leaving at 50 ms
        clock.at(0.01 * i, _send_paced, radio, [0, 1], size, results, i, pace)
    clock.at(0.2, _send_paced, radio, [0, 1], size, results, 3, pace)  # after it left: its own frame
    clock.run()
    assert [(i, ok) for i, _t, ok in sorted(results)] == [(i, True) for i in range(4)]
    at = {i: t for i, t, _ok in results}
    assert at[0] == at[1] == at[2]  # one frame
    assert pace < at[0] < 0.1  # left at 50 ms (plus slot, airtime, latency), not at once
    assert 0.2 + pace < at[3] < 0.3
    assert radio.frames_by_kind["status"] == 2 * 2  # two frames, each with its link ACK
    assert radio.held == {}


def test_records_that_do_not_fit_the_held_frame_leave_a_pace_later() -> None:
    radio, clock = _line(2, "802.15.4")
    pace = 0.05
    size = 120
    n = 40  # more than one datagram holds
    results: list[tuple[int, float, bool]] = []
    for i in range(n):
        _send_paced(radio, [0, 1], size, results, i, pace)
    held = radio.held[0]
    assert len(held) >= 2 and [round(leave, 9) for leave, _ in held] == [
        round(pace * (k + 1), 9) for k in range(len(held))
    ]
    room = radio.profile.datagram_room()
    for _leave, entries in held:
        assert len(entries) == 1
        hop, frame_size = entries[0][4], entries[0][2]
        assert isinstance(hop, Hop) and hop.route.lengths is not None
        assert frame_size == packed_frame_len(hop.route.lengths) <= room
    assert sum(len(e[0][4].route.lengths) for _, e in held) == n
    clock.run()
    assert sorted((i, ok) for i, _t, ok in results) == [(i, True) for i in range(n)]


def test_a_relay_that_dies_while_holding_fails_what_it_held() -> None:
    radio, clock = _line(3)
    size = status_frame_len("dep-1", "success")
    results: list[tuple[int, float, bool]] = []
    for i in range(3):
        _send_paced(radio, [0, 1, 2], size, results, i, 0.05)
    clock.at(0.01, radio.power, 0, False)  # the sender's own relay holds them: it dies first
    clock.run()
    assert sorted((i, ok) for i, _t, ok in results) == [(i, False) for i in range(3)]
    assert radio.held == {}


def test_the_relays_pace_cuts_status_frames_in_a_whole_run() -> None:
    """On 400 WiFi nodes, holding up frames for the product's pace (the default) packs more records
    per frame than packing only what waits for a busy link; every status still arrives."""
    frames = {}
    for pace in (0.0, 0.05):
        sc = parse_scenario(
            {
                "topology": {"kind": "random", "nodes": 400, "loss": 0.05},
                "radio": {"profile": "wifi-mesh"},
                "image": {"size": 24 * 1024},
                "collection": {"window": 3.0},
                "stream": {"uplink_pace": pace},
            }
        )
        res = run_scenario(sc, 2)
        assert res.summary["installed"] == 400
        res.clock.run(until=res.clock.now + 120.0)
        statuses = res.stream.service.statuses
        for v, node in enumerate(res.stream.nodes):
            assert node.reported and {s for _d, s in statuses.get(v, [])} == set(node.reported)
        frames[pace] = res.radio.frames_by_kind["status"]
    assert frames[0.05] < 0.9 * frames[0.0]


@pytest.mark.parametrize("pace", [-0.1, 11.0, float("nan"), "fast"])
def test_uplink_pace_out_of_range_is_a_scenario_error(pace: object) -> None:
    with pytest.raises(ScenarioError, match="uplink_pace"):
        parse_scenario({"stream": {"uplink_pace": pace}})
