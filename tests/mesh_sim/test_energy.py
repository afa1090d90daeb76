"""The radio-state energy model (mesh_sim/energy.py): states, sleep after the subtree is done."""

from __future__ import annotations

import pytest

from mesh_sim.election import MeshTree
from mesh_sim.energy import STATE_CURRENTS, awake_until, node_energy
from mesh_sim.radio import PROFILES


def _chain() -> MeshTree:
    # 0 - 1 - 2, and 3 under 0
    return MeshTree(
        roots=[0],
        parent=[-1, 0, 1, 0],
        depth=[0, 1, 2, 1],
        children=[[1, 3], [2], [], []],
        order=[0, 1, 3, 2],
        root_of=[0, 0, 0, 0],
    )


def test_awake_until_subtree_done() -> None:
    tree = _chain()
    # the root finishes first but must serve its subtree until node 2 is done at 50 s
    assert awake_until(tree, [5.0, 10.0, 50.0, 8.0], 100.0) == [50.0, 50.0, 50.0, 8.0]
    # a node that never completes keeps its ancestors awake to the horizon
    assert awake_until(tree, [5.0, 10.0, None, 8.0], 100.0) == [100.0, 100.0, 100.0, 8.0]


def test_node_energy_states() -> None:
    p = PROFILES["802.15.4"]
    c = STATE_CURRENTS["802.15.4"]
    # node 0: 1 s tx, 2 s rx, awake 10 s of 100 s; node 1: asleep at once
    rep = node_energy(p, [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], 100.0)
    e0 = (1.0 * c.tx_ma + 2.0 * c.rx_ma + 7.0 * c.listen_ma + 90.0 * c.sleep_ma) * p.voltage
    e1 = 100.0 * c.sleep_ma * p.voltage
    assert rep.per_node_mj == pytest.approx((e0, e1))
    assert rep.max_node == 0 and rep.max_mj == pytest.approx(round(e0, 1))
    assert rep.sum_mj == pytest.approx(round(e0 + e1, 1))
    # idle listening costs what receiving costs: staying awake is what drains the battery
    longer = node_energy(p, [1.0], [2.0], [20.0], 100.0)
    assert longer.per_node_mj[0] > rep.per_node_mj[0] + 9 * c.listen_ma * p.voltage


def test_busy_past_horizon_counts_all_airtime() -> None:
    p = PROFILES["wifi-mesh"]
    rep = node_energy(p, [5.0], [6.0], [4.0], 3.0)
    c = STATE_CURRENTS["wifi-mesh"]
    assert rep.per_node_mj[0] == pytest.approx((5.0 * c.tx_ma + 6.0 * c.rx_ma) * p.voltage)
