"""Weekly counting over a lossy multi-hop mesh with the firmware's own counters (mesh_sim/counting.py)."""

from __future__ import annotations

import random

from mesh_sim.counting import run_counting
from mesh_sim.topology import build_topology

W = 2950


def test_hundred_nodes_lossy_multi_hop_each_counted_once_per_week_no_per_node_message_at_the_gateway() -> (
    None
):
    topo = build_topology("random", 100, (0.25, 0.55), random.Random(11), degree=5.0)
    res = run_counting(
        topo,
        weeks=3,
        first_window=W,
        seed=4,
        root_reboots=(3 * 3600.0, 7 * 86400.0 + 2 * 3600.0),  # mid-report in weeks 1 and 2
        node_reboots=((17, 4 * 3600.0), (42, 8 * 86400.0)),
    )
    assert len(res.roots) == 1 and res.max_hops >= 4
    # the losses were real: reports and acknowledgements went missing and nodes sent again
    assert res.report_frames_lost > 0 and res.acks_lost > 0 and res.report_frames > 3 * 100
    assert res.refused == 0
    print(
        f"\ncounting, 100 nodes, {res.max_hops} hops max, links lose 25-55 %: {res.report_frames} reports "
        f"sent ({res.report_frames_lost} lost, {res.acks_lost} acks lost) for 300 node-weeks; "
        f"{res.gateway_messages['COUNT']} sealed count records at the gateway"
    )
    for w in (W, W + 1, W + 2):
        assert res.nodes_acknowledged[w] == 100
        assert res.counted[w] == 100  # every node exactly once, root reboots and resends included
    # what reached the gateway: the root's sealed count records only, one per cell and week
    # (plus the re-sends of lost answers) — never one message per node
    cells = sum(len(c) for c in res.counted_by_cell.values())
    assert set(res.gateway_messages) == {"COUNT"}
    assert cells <= res.gateway_messages["COUNT"] < 3 * 100 / 4
    assert cells == 3 * 4  # each week: 2 device types x 2 versions, all nodes of one age bucket
    assert {b for c in res.counted_by_cell.values() for (b, _, _) in c} == {1, 2}  # week 1, then 2..4


def test_several_roots_and_the_same_seed_gives_the_same_run() -> None:
    def run() -> tuple[str, dict[int, int]]:
        topo = build_topology("grid", 64, (0.2, 0.5), random.Random(3), submeshes=3)
        res = run_counting(topo, weeks=1, first_window=W, seed=9)
        assert len(res.roots) == 3 and res.counted == {W: 64}
        return res.trace, res.counted

    assert run() == run()
