"""mesh_sim shortcuts that make runs cheaper must not change what is simulated: the same seed gives
the same trace with them off (every reception delivered one by one through the routing rules, a
burst's frames too, and the driver pumping the node after every frame the agent takes)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest

from firmware_proto.update_agent import UpdateAgent
from mesh_sim.clock import EventClock
from mesh_sim.group import GroupSim
from mesh_sim.runner import run_scenario
from mesh_sim.scenario import parse_scenario


def _scenario(profile: str) -> dict[str, object]:
    return {
        "topology": {"kind": "random", "nodes": 30, "loss": 0.05},
        "radio": {"profile": profile},
        "image": {"size": 24 * 1024},
        "collection": {"window": 3.0},
    }


@pytest.mark.parametrize("profile", ["802.15.4", "wifi-mesh"])
def test_shortcuts_off_give_the_same_trace(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sc = parse_scenario(_scenario(profile))
    fast = run_scenario(sc, 5)
    assert fast.summary["installed"] == 30

    def one_by_one(self: GroupSim, receivers: list[int], sender: int, frame: bytes) -> None:
        for r in receivers:
            self._deliver(r, sender, frame)

    bursts = []

    def burst_one_by_one(
        self: GroupSim, got: list[tuple[int, Sequence[bytes]]], sender: int, burst: tuple[bytes, ...]
    ) -> None:
        bursts.append(len(got))
        for r, frames in got:
            for f in frames:
                self._deliver(r, sender, f)

    receive = UpdateAgent.receive
    kept = []

    def always_touched(self: UpdateAgent, data: bytes, sender: Hashable, now: float) -> bool:
        if not receive(self, data, sender, now):
            kept.append(1)
        return True  # the driver pumps after every frame, duplicates and kept parts included

    monkeypatch.setattr(GroupSim, "_deliver_all", one_by_one)
    monkeypatch.setattr(GroupSim, "_deliver_burst", burst_one_by_one)
    monkeypatch.setattr(UpdateAgent, "receive", always_touched)
    slow = run_scenario(sc, 5)
    assert kept  # the shortcut had receptions to skip
    assert bool(bursts) == (profile == "802.15.4")  # a block's parts go as one burst on 802.15.4
    assert slow.trace_hash == fast.trace_hash
    assert slow.summary["group_stream"] == fast.summary["group_stream"]


def _clocks_made(monkeypatch: pytest.MonkeyPatch) -> list[EventClock]:
    """Every EventClock made from now on (run_scenario makes its own)."""
    clocks: list[EventClock] = []
    init = EventClock.__init__

    def keep(self: EventClock) -> None:
        init(self)
        clocks.append(self)

    monkeypatch.setattr(EventClock, "__init__", keep)
    return clocks


def test_a_nodes_wake_ups_do_not_pile_up_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """GroupSim._arm reuses a wake-up already on the clock for the time asked for: a node's far
    timers, asked for again after every nearer wake-up, do not stack up (they did: ~30 per node
    on a 3,000-node run, a tenth of its events spent popping them)."""
    clocks = _clocks_made(monkeypatch)
    pending: list[int] = []

    def sample(now: float, bound: float) -> None:
        pending.append(sum(1 for e in clocks[0]._heap if getattr(e[2], "__name__", "") == "_fire"))

    sc = parse_scenario(
        {**_scenario("wifi-mesh"), "topology": {"kind": "random", "nodes": 400, "loss": 0.05}}
    )
    res = run_scenario(sc, 3, progress=sample)
    assert res.summary["installed"] == 400
    assert len(pending) >= 5  # sampled through the stream (every 16,384 events)
    assert max(pending) <= 3 * 400


def test_the_control_planes_timers_hold_one_wake_up_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """ControlPlane keeps its sessions' timers (keep-alive an hour out) in a heap of its own and
    the clock one wake-up for the earliest: the clock's heap, popped by every event, does not
    carry one entry per node (it did: 10,000 of ~20,000 during a 10,000-node stream)."""
    clocks = _clocks_made(monkeypatch)
    control: list[int] = []
    waiting: list[int] = []

    def sample(now: float, bound: float) -> None:
        heap = clocks[0]._heap
        control.append(
            sum(1 for e in heap if getattr(e[2], "__self__", None).__class__.__name__ == "ControlPlane")
        )
        waiting.append(len(res_control[0]._timers) if res_control else 0)

    from mesh_sim import control as controlmod

    res_control: list[controlmod.ControlPlane] = []
    cinit = controlmod.ControlPlane.__init__

    def keep_control(self: controlmod.ControlPlane, *a: object, **k: object) -> None:
        cinit(self, *a, **k)  # type: ignore[arg-type]
        res_control.append(self)

    monkeypatch.setattr(controlmod.ControlPlane, "__init__", keep_control)
    sc = parse_scenario(
        {**_scenario("wifi-mesh"), "topology": {"kind": "random", "nodes": 400, "loss": 0.05}}
    )
    res = run_scenario(sc, 3, progress=sample)
    assert res.summary["installed"] == 400
    assert len(control) >= 5
    assert max(control) <= 10  # one wake-up (and a few stale ones an earlier timer superseded)
    assert max(waiting) >= 400  # every session's timer is still kept, off the clock
