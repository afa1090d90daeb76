"""EventClock: two heaps (near and far events) run in exactly the order one heap would."""

from __future__ import annotations

from heapq import heappop, heappush

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_sim.clock import HORIZON, EventClock

# delays around the horizon, zero (due now) and negative (clamped to now), and ties
DELAYS = st.sampled_from([0.0, -1.0, 0.001, 0.5, HORIZON - 1e-9, HORIZON, HORIZON + 1e-9, 2.0, 30.0, 3600.0])


def _reference(plan: list[list[float]], roots: list[float], until: float) -> list[tuple[float, int]]:
    """One heap, the order the clock promises: (time, scheduling order)."""
    heap: list[tuple[float, int, int]] = []
    seq = 0
    now = 0.0
    out: list[tuple[float, int]] = []
    for i, delay in enumerate(roots):
        seq += 1
        heappush(heap, (max(now, delay), seq, i))
    while heap:
        when, _s, i = heappop(heap)
        if when > until:
            break
        now = when
        out.append((when, i))
        for delay in plan[i % len(plan)] if len(out) < 400 else []:
            seq += 1
            heappush(heap, (max(now, now + delay), seq, len(roots) + seq))
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(DELAYS, max_size=3), min_size=1, max_size=6),
    st.lists(DELAYS, min_size=1, max_size=8),
    st.sampled_from([float("inf"), 1.5, 40.0]),
)
def test_two_heaps_keep_one_order(plan: list[list[float]], roots: list[float], until: float) -> None:
    clock = EventClock()
    seen: list[tuple[float, int]] = []

    def event(i: int) -> None:
        seen.append((clock.now, i))
        if len(seen) < 400:
            for delay in plan[i % len(plan)]:
                # the id the reference gives: the clock's sequence number once this is scheduled
                clock.after(delay, event, len(roots) + clock._seq + 1)

    for i, delay in enumerate(roots):
        clock.at(delay, event, i)
    clock.run(until=until)
    assert seen == _reference(plan, roots, until)
    if until != float("inf") and clock.pending():
        assert clock.now == until and (clock.next_time() or 0.0) > until


def test_due_now_sees_both_heaps() -> None:
    clock = EventClock()
    calls: list[bool] = []
    clock.at(5.0, lambda: calls.append(clock.due_now()))  # scheduled far ahead: the far heap
    clock.at(5.0, lambda: calls.append(clock.due_now()))
    clock.run()
    assert calls == [True, False]
    assert clock.pending() == 0 and clock.next_time() is None
