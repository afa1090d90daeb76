"""The baselines' ledger: ``_Ledger.links`` (numpy, one call for many hops) is bit for bit what
``_Ledger.link`` one hop at a time gives — the same draws from the generator in the same order,
the same sums added in the same order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_sim.baselines import _Ledger
from mesh_sim.radio import PROFILES
from mesh_sim.topology import Topology


def _topo(losses: list[float]) -> Topology:
    n = len(losses) + 1
    return Topology.from_links(
        "line", [(float(i), 0.0) for i in range(n)], [(i, i + 1, losses[i]) for i in range(n - 1)]
    )


@settings(max_examples=60, deadline=None)
@given(
    losses=st.lists(st.sampled_from([0.0, 0.02, 0.05, 0.3, 0.9]), min_size=1, max_size=6),
    hops=st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.integers(0, 40), st.integers(0, 2))),
    profile=st.sampled_from(["802.15.4", "wifi-mesh"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_links_is_link_one_by_one(
    losses: list[float], hops: list[tuple[int, bool, int, int]], profile: str, seed: int
) -> None:
    p = PROFILES[profile]
    topo = _topo(losses)
    shapes = [p.frames_of(100), p.frames_of(1200), p.frames_of(16)]
    items = []
    for i, down, count, shape in hops:
        a = i % (topo.n - 1)
        items.append((a + 1, a, shapes[shape], count) if down else (a, a + 1, shapes[shape], count))
    one, many = _Ledger(topo, p), _Ledger(topo, p)
    one.tx_air[0] = many.tx_air[0] = 0.1  # what earlier calls left there stays under the new sums
    rng1, rng2 = np.random.default_rng(seed), np.random.default_rng(seed)
    for a, b, frames, count in items:
        one.link(a, b, frames, count, rng1)
    many.links(items, rng2)
    assert (many.frames, many.bytes) == (one.frames, one.bytes)
    assert many.tx_air == one.tx_air and many.rx_air == one.rx_air  # exact floats
    assert rng1.random() == rng2.random()  # the generators were left in the same state
