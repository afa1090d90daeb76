"""Radios sleep once nothing more is needed of them (``[stream] sleep``, GroupSim._try_sleep): a
node sleeps only once it runs the update, every child in its routing tree sleeps and its stream
cores are idle; asleep, no broadcast reaches it (no rx time, no delivery) but unicast hops still do;
the energy of the group stream is the radio's own awake time."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from mesh_sim.clock import EventClock
from mesh_sim.radio import BROADCAST, PROFILES, Radio
from mesh_sim.runner import run_scenario
from mesh_sim.scenario import load_scenario, parse_scenario
from mesh_sim.topology import Topology

SCENARIOS = Path(__file__).resolve().parents[2] / "mesh_sim" / "scenarios"


def _line(n: int) -> tuple[Radio, EventClock, list[tuple[int, int]]]:
    topo = Topology.from_links(
        "line", [(float(i), 0.0) for i in range(n)], [(i, i + 1, 0.0) for i in range(n - 1)]
    )
    radio = Radio(topo, PROFILES["802.15.4"], random.Random(1))
    clock = EventClock()
    got: list[tuple[int, int]] = []
    radio.attach(clock, lambda r, s, d: got.append((r, s)), lambda v: None)
    return radio, clock, got


def test_asleep_no_broadcast_reaches_it_but_unicast_does() -> None:
    radio, clock, got = _line(3)
    radio.sleep(1, True)
    radio.send(0, BROADCAST, b"x" * 40, kind="data")
    radio.send(2, BROADCAST, b"y" * 40, kind="data")
    clock.run()
    assert got == [] and radio.rx_time[1] == 0.0  # both broadcasts only had node 1 in range
    radio.send(0, 1, b"z" * 40, kind="control")
    clock.run()
    assert got == [(1, 0)] and radio.rx_time[1] > 0.0  # a unicast hop wakes it (duty-cycled MAC)
    done: list[bool] = []
    radio.send_path([0, 1, 2], 40, done.append)
    clock.run()
    assert done == [True]  # and it still forwards
    radio.sleep(1, False)
    radio.send(0, BROADCAST, b"w" * 40, kind="data")
    clock.run()
    assert got[-1] == (1, 0)
    radio.power(1, False)  # off: not awake either; on again: awake
    assert not radio.rx_on[1] and not radio.asleep[1]
    radio.power(1, True)
    assert radio.rx_on[1]


def _small(profile: str, sleep: bool) -> dict[str, Any]:
    return {
        "topology": {"kind": "random", "nodes": 40, "loss": 0.05},
        "radio": {"profile": profile},
        "image": {"size": 48 * 1024},
        "collection": {"window": 3.0},
        "stream": {"sleep": sleep},
    }


def _spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[int, float]], dict[str, Any]]:
    """Check the rule at every radio that goes to sleep, and that no broadcast reaches a sleeper."""
    from mesh_sim import group

    slept: list[tuple[int, float]] = []  # (node, when)
    seen: dict[str, Any] = {"all": 0, "burst": 0}
    try_sleep = group.GroupSim._try_sleep
    deliver_all, deliver_burst = group.GroupSim._deliver_all, group.GroupSim._deliver_burst

    def spy(self: group.GroupSim, v: int) -> None:
        before = list(self.radio.asleep)
        try_sleep(self, v)
        seen["sim"] = self
        for u, (a, b) in enumerate(zip(before, self.radio.asleep, strict=True)):
            if b and not a:
                node = self.nodes[u]
                # the rule, at the moment it went to sleep, in the tree of that moment
                assert node.success_at is not None and not node.down
                assert all(self.radio.asleep[c] for c in self.tree.children[u])
                assert node.relay is None or not node.relay.busy
                assert node.root is None or not node.root.busy
                slept.append((u, self.clock.now))

    def spy_all(self: group.GroupSim, receivers: list[int], sender: int, frame: bytes) -> None:
        assert not any(self.radio.asleep[r] for r in receivers)  # no broadcast reaches a sleeper
        seen["all"] += 1
        deliver_all(self, receivers, sender, frame)

    def spy_burst(self: group.GroupSim, got: list[tuple[int, Any]], sender: int, burst: Any) -> None:
        assert not any(self.radio.asleep[r] for r, _ in got)
        seen["burst"] += 1
        deliver_burst(self, got, sender, burst)

    monkeypatch.setattr(group.GroupSim, "_try_sleep", spy)
    monkeypatch.setattr(group.GroupSim, "_deliver_all", spy_all)
    monkeypatch.setattr(group.GroupSim, "_deliver_burst", spy_burst)
    return slept, seen


@pytest.mark.parametrize("profile", ["wifi-mesh", "802.15.4"])
def test_a_radio_sleeps_only_when_its_subtree_is_through(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept, seen = _spy(monkeypatch)
    res = run_scenario(parse_scenario(_small(profile, True)), 2)
    s = res.summary
    assert s["installed"] == 40
    sim = seen["sim"]
    assert len(slept) >= 30  # most radios sleep before the run stops (a relay may still be ending)
    assert len({u for u, _ in slept}) == len(slept)  # no re-election here: each sleeps once
    assert seen["all"] + seen["burst"] > 100  # (the spies saw the stream)
    for u, when in slept:
        assert sim.asleep_at[u] == when
    # energy: the radio's own awake time (a sleeping leaf costs less than one awake to the end)
    per = s["per_node"]["energy_mj"]
    leaf = min((u for u, _ in slept if not res.tree.children[u]), key=lambda u: sim.asleep_at[u])
    assert all(per[leaf] < per[u] for u in range(40) if sim.asleep_at[u] is None)


def test_a_new_tree_wakes_every_radio_and_sleeps_them_by_its_own_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept, _seen = _spy(monkeypatch)
    res = run_scenario(load_scenario(SCENARIOS / "root-dies.toml"))
    s = res.summary
    assert s["reelections"] == 1
    dead = s["roots"][0]
    assert all(s["per_node"]["completion_s"][v] is not None for v in range(s["nodes"]) if v != dead)
    assert slept and all(u != dead for u, _ in slept)


def test_without_sleep_every_radio_hears_to_the_end() -> None:
    res = run_scenario(parse_scenario(_small("wifi-mesh", False)), 2)
    assert res.summary["installed"] == 40
    assert not any(res.radio.asleep) and all(t is None for t in res.stream.asleep_at)
    # the same topology with sleep: fewer receptions (asleep nodes hear nothing)
    on = run_scenario(parse_scenario(_small("wifi-mesh", True)), 2)
    assert on.summary["installed"] == 40
    assert sum(on.radio.rx_time) < sum(res.radio.rx_time)


def test_scenario_rejects_a_sleep_that_is_not_a_bool() -> None:
    from mesh_sim.scenario import ScenarioError

    with pytest.raises(ScenarioError):
        parse_scenario(_small("wifi-mesh", "yes"))  # type: ignore[arg-type]
