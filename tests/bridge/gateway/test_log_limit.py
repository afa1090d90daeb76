"""Drop logs are rate-limited and aggregated per kind (sans-I/O, a virtual clock)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.gateway.log_limit import DropLog, kind_of


def test_first_of_a_kind_logged_then_one_summary_per_interval() -> None:
    d = DropLog(interval=10)
    assert d.record("malformed", "dropped 1", 0.0) == ["dropped 1"]
    for i in range(999):
        assert d.record("malformed", f"dropped {i + 2}", 0.001 * i) == []
    assert d.record("oversize", "big", 1.0) == ["big"]  # another kind is not muted
    assert d.next_deadline() == 10.0
    (summary,) = d.due(10.0)
    assert "999 more" in summary and "malformed" in summary and "dropped 1000" in summary
    assert d.record("malformed", "again", 10.5) == ["again"]
    assert d.next_deadline() is None  # nothing muted


def test_kind_ignores_peer_chosen_text() -> None:
    assert kind_of("REGISTER 'a/b': bad") == kind_of("REGISTER 'zzz': worse")
    assert kind_of("oversize: 9000 bytes > maximum 1500") == "oversize"
    assert kind_of("client id 'x' was used by a verified identity") == kind_of(
        "client id 'y' was used by a verified identity"
    )


@settings(max_examples=100, deadline=None)
@given(
    drops=st.lists(st.tuples(st.text(max_size=30), st.floats(0, 1000, allow_nan=False)), max_size=500),
)
def test_lines_bounded_by_kinds_and_intervals(drops: list[tuple[str, float]]) -> None:
    """Whatever a sender makes the gateway drop: at most one immediate line per kind per interval
    plus one summary each, at most max_kinds + 1 kinds, and every drop is counted."""
    d = DropLog(interval=10, max_kinds=8)
    lines = 0
    now = 0.0
    for reason, dt in sorted(drops, key=lambda x: x[1]):
        now = dt
        lines += len(d.record(kind_of(reason), reason, now))
        assert len(d._windows) <= 9
    lines += len(d.due(now + 10))
    windows = int(now // 10) + 2
    assert lines <= 2 * 9 * windows
    assert d.logged + d.suppressed == len(drops)
