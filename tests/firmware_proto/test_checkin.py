"""Check-in interval: 0.5-1.5x jitter on the node, server-sent updates, roots that respect it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_proto.checkin import MAX_INTERVAL, MIN_INTERVAL, CheckinSchedule
from firmware_proto.sealed_uplink import RecordBatcher, SealedRecordSender
from firmware_proto.testing.flash import MemoryFlash
from wire.sealed import RecordOp, derive_record_key


@given(interval=st.integers(MIN_INTERVAL, MAX_INTERVAL), seed=st.integers(0, 2**32), now=st.floats(0, 1e9))
def test_every_wait_is_within_half_and_one_and_a_half_intervals(interval: int, seed: int, now: float) -> None:
    sched = CheckinSchedule(interval, random.Random(seed))
    for _ in range(20):
        due = sched.schedule(now)
        assert 0.5 * interval <= due - now <= 1.5 * interval
        assert sched.next_timer() == due


def test_jitter_spreads_a_fleet_that_booted_together() -> None:
    waits = [CheckinSchedule(600, random.Random(i)).schedule(0.0) for i in range(1000)]
    assert min(waits) < 330 and max(waits) > 870  # the whole 300..900 s range is used
    buckets = [sum(1 for w in waits if lo <= w < lo + 60) for lo in range(300, 900, 60)]
    assert max(buckets) < 150  # roughly uniform: no bucket holds half the fleet


def test_server_sent_interval_is_taken_within_bounds_only() -> None:
    sched = CheckinSchedule(1800, random.Random(1))
    assert sched.update_from_next({"id": "d", "meshota": {"checkin_interval": 60}})
    assert sched.interval == 60
    assert sched.update_from_next(None, {"x-meshota-checkin-interval": "120"})
    assert sched.interval == 120
    for bad in (5, MAX_INTERVAL + 1, "soon", True, None, -1, float("nan")):
        assert not sched.update(bad)
        assert sched.interval == 120
    with pytest.raises(ValueError, match="outside"):
        CheckinSchedule(1, random.Random(1))


def _records(n: int) -> list[bytes]:
    sender = SealedRecordSender(derive_record_key("node-a", b"\x01" * 16), MemoryFlash())
    return [sender.seal(RecordOp.STATUS, "d", {"status": "downloading"})[1] for _ in range(n)]


def test_root_batch_never_holds_a_record_past_half_the_childs_interval() -> None:
    """A root collecting for an hour must not sit on a record of a child that calls home every
    minute; a slow child's records wait for the root's window as before."""
    batcher = RecordBatcher(window=3600.0, max_records=100, max_bytes=100_000)
    fast = _records(3)
    batcher.receive(fast[0], "fast", 0.0)
    batcher.handle_timer(3600.0)
    assert len(batcher.actions()) == 1  # first record: the child's cadence is not known yet
    batcher.receive(fast[1], "fast", 60.0)  # cadence 60 s: hold at most 30 s
    assert batcher.next_timer() == 90.0
    batcher.handle_timer(89.9)
    assert batcher.actions() == []
    batcher.handle_timer(90.0)
    assert [len(a.records) for a in batcher.actions()] == [1]

    slow = RecordBatcher(window=600.0, max_records=100, max_bytes=100_000)
    recs = _records(2)
    slow.receive(recs[0], "slow", 0.0)
    slow.handle_timer(600.0)
    slow.actions()
    slow.receive(recs[1], "slow", 86_400.0)  # calls home daily: the root's own window applies
    assert slow.next_timer() == 86_400.0 + 600.0


def test_cadence_memory_is_bounded() -> None:
    batcher = RecordBatcher(window=10.0, max_records=1000, max_bytes=1_000_000, max_children=8)
    for i, rec in enumerate(_records(50)):
        batcher.receive(rec, f"child-{i}", float(i))
    assert len(batcher._last_seen) == 8 and len(batcher._cadence) <= 8
