"""The clock's collector policy while it runs (mesh_sim/clock.py ``_quiet_gc``): raised thresholds
and what existed before frozen, both put back when the outermost run returns, also on an error;
cycles made during a run are still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from mesh_sim.clock import GC_THRESHOLD, EventClock, SimulationError


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_thresholds_raised_while_running_and_restored_after() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    seen: list[tuple[tuple[int, int, int], int]] = []
    clock = EventClock()
    clock.at(1.0, lambda: seen.append((gc.get_threshold(), gc.get_freeze_count())))
    clock.run()
    assert seen[0][0] == GC_THRESHOLD != before
    assert seen[0][1] > frozen_before  # what existed before the run is out of the collector's way
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before


def test_nested_runs_restore_once_and_errors_restore_too() -> None:
    before = gc.get_threshold()
    outer, inner = EventClock(), EventClock()
    seen: list[tuple[int, int, int]] = []
    inner.at(0.0, lambda: seen.append(gc.get_threshold()))

    def run_inner() -> None:
        inner.run()
        seen.append(gc.get_threshold())  # the inner run returned: the outer still runs quietly

    outer.at(0.0, run_inner)
    outer.run()
    assert seen == [GC_THRESHOLD, GC_THRESHOLD]
    assert gc.get_threshold() == before

    failing = EventClock()
    failing.at(0.0, lambda: 1 / 0)
    with pytest.raises(SimulationError):
        failing.run()
    assert gc.get_threshold() == before


def test_cycles_made_during_a_run_are_collected_during_it() -> None:
    refs: list[weakref.ref[_Cyclic]] = []
    dead_in_run: list[int] = []

    def make() -> None:
        for _ in range(GC_THRESHOLD[0] // 2):
            refs.append(weakref.ref(_Cyclic()))

    clock = EventClock()
    for i in range(6):  # three young generations' worth of garbage cycles
        clock.at(float(i), make)
    clock.at(10.0, lambda: dead_in_run.append(sum(r() is None for r in refs)))
    clock.run()
    assert dead_in_run[0] >= GC_THRESHOLD[0]  # collected while the clock ran, not only at its end
    gc.collect()
    assert all(r() is None for r in refs)  # nothing kept alive by the freeze
