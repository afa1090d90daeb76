"""A node's weekly count and its root's tally (firmware_proto/counting.py), sans-I/O, no sockets."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.api import publish, render_csv, render_json
from bridge.api._fleet_stats import CellKey, cell_key
from firmware_proto.counting import ROOT_RECORD, NodeCounter, RootCounter
from firmware_proto.inventory_levels import NodeInventory
from firmware_proto.testing.flash import MemoryFlash
from wire.countme import (
    ACK_COUNTED,
    ACK_REFUSED,
    WEEK,
    CountRecord,
    ack_frame,
    decode_count_record,
    report_frame,
    window_of,
    window_start,
)

W = 2950


def _node(i: int, version: str = "fw-1", dtype: str = "esp32") -> NodeCounter:
    return NodeCounter(MemoryFlash(4096), NodeInventory(dtype, version), random.Random(i))


def _run(
    nodes: dict[Hashable, NodeCounter],
    root: RootCounter,
    until: float,
    *,
    loss: float = 0.0,
    rng: random.Random | None = None,
) -> int:
    """Drive nodes and root on a virtual clock until ``until``; frames lost with ``loss``.
    Returns the number of report frames that reached the root."""
    rng = rng or random.Random(0)
    reached = 0
    now = min(t for n in nodes.values() if (t := n.next_timer()) is not None)
    while now < until:
        for addr, node in nodes.items():
            t = node.next_timer()
            if t is not None and t <= now:
                node.handle_timer(now)
                for frame in node.frames_to_send():
                    if rng.random() >= loss:
                        reached += 1
                        root.receive(frame, addr, now)
        t = root.next_timer()
        if t is not None and t <= now:
            root.handle_timer(now)
        for addr, frame in root.frames_to_send():
            if rng.random() >= loss:
                nodes[addr].receive(frame, now)
        times = [t for n in nodes.values() if (t := n.next_timer()) is not None]
        if (t := root.next_timer()) is not None:
            times.append(t)
        now = max(now + 1e-3, min(times)) if times else until
    return reached


def _records(root: RootCounter) -> set[CountRecord]:
    return {decode_count_record(r) for r in root.pending()}


def test_each_node_counted_once_and_one_record_per_cell_after_the_window() -> None:
    start = window_start(W) + 10
    nodes: dict[Hashable, NodeCounter] = {}
    for i in range(12):
        node = _node(i, "fw-1" if i < 9 else "fw-2")
        node.handle_timer(start)
        nodes[("10.0.0.1", 4000 + i)] = node
    root = RootCounter(MemoryFlash(4096))
    _run(nodes, root, window_start(W) + 2 * 86400, loss=0.4, rng=random.Random(5))
    assert all(n.counted for n in nodes.values())
    assert root.stats.counted == 12 and root.tally() == {(1, "fw-1", "esp32"): 9, (1, "fw-2", "esp32"): 3}
    assert root.pending() == []  # nothing leaves before the window has ended
    assert sum(n.sent for n in nodes.values()) > 12  # losses made nodes resend; counted once anyway
    root.handle_timer(window_start(W + 1))
    assert _records(root) == {CountRecord(W, 1, "fw-1", "esp32", 9), CountRecord(W, 1, "fw-2", "esp32", 3)}


def test_a_node_reports_early_in_the_window_and_stops_once_acknowledged() -> None:
    node = _node(1)
    node.handle_timer(window_start(W))
    due = node.next_timer()
    assert due is not None and window_start(W) <= due <= window_start(W) + node.spread
    node.handle_timer(due)
    (frame,) = node.frames_to_send()
    assert frame == report_frame(CountRecord(W, 1, "fw-1", "esp32", 1))
    retry = node.next_timer()
    assert retry is not None and node.retry <= retry - due <= 1.5 * node.retry
    node.receive(ack_frame(W - 1, ACK_COUNTED), due + 1)  # another window's: ignored
    assert not node.counted
    node.receive(ack_frame(W, ACK_COUNTED), due + 1)
    assert node.counted and node.next_timer() == window_start(W + 1)
    # a reboot later in the window does not report again; the next window does
    again = NodeCounter(node.flash, node.inventory, random.Random(9))
    again.handle_timer(due + 3600)
    assert again.counted and again.frames_to_send() == [] and again.next_timer() == window_start(W + 1)


def test_age_bucket_kept_across_an_upgrade_and_a_reboot() -> None:
    node = _node(1)
    for week in range(6):
        if week == 3:  # an update: new version, new counter object, the same flash
            node = NodeCounter(node.flash, NodeInventory("esp32", "fw-2"), random.Random(2))
        node.handle_timer(window_start(W + week))
        due = node.next_timer()
        assert due is not None
        node.handle_timer(due)
        (frame,) = node.frames_to_send()
        rec = decode_count_record(frame[2:])
        assert (rec.window, rec.bucket, rec.version) == (W + week, 1 if week == 0 else 2 if week < 4 else 3,
                                                         "fw-1" if week < 3 else "fw-2")  # fmt: skip
        node.receive(ack_frame(W + week, ACK_COUNTED), due)


def test_root_reboot_neither_loses_nor_double_counts() -> None:
    flash = MemoryFlash(4096)
    root = RootCounter(flash, commit_interval=1.0)
    t = window_start(W) + 100
    frame = report_frame(CountRecord(W, 2, "fw-1", "esp32", 1))
    root.receive(frame, "a", t)
    assert root.frames_to_send() == []  # the acknowledgement waits for the flash write
    root.handle_timer(t + 1)
    assert root.frames_to_send() == [("a", ack_frame(W, ACK_COUNTED))]
    root.receive(frame, "b", t + 2)  # counted, then the power goes before the write
    root = RootCounter(flash)
    assert root.tally() == {(2, "fw-1", "esp32"): 1}  # "b" was never acknowledged: it resends
    for sender in ("a", "b", "a"):
        root.receive(frame, sender, t + 10)
    root.handle_timer(t + 12)
    assert root.tally() == {(2, "fw-1", "esp32"): 2} and root.stats.repeats == 2
    assert [f for _, f in root.frames_to_send()] == [ack_frame(W, ACK_COUNTED)] * 3
    root.handle_timer(window_start(W + 1))
    (record,) = root.pending()
    root = RootCounter(flash)  # reboot before the server answered: the record is still there
    assert root.pending() == [record] and decode_count_record(record).count == 2
    root.delivered(record)
    assert RootCounter(flash).pending() == [] and flash.read_record(ROOT_RECORD) is not None


def test_root_refuses_other_windows_and_children_over_its_cap() -> None:
    root = RootCounter(MemoryFlash(4096), max_children=2, commit_interval=0)
    t = window_start(W) + 5
    root.receive(report_frame(CountRecord(W - 1, 1, "fw", "t", 1)), "late", t)
    for child in ("a", "b", "c"):
        root.receive(report_frame(CountRecord(W, 1, "fw", "t", 1)), child, t)
    root.receive(b"\x43\x01junk", "d", t)
    root.receive(b"", "e", t)
    acks = root.frames_to_send()
    assert acks == [("late", ack_frame(W - 1, ACK_REFUSED)), ("a", ack_frame(W, ACK_COUNTED)),
                    ("b", ack_frame(W, ACK_COUNTED)), ("c", ack_frame(W, ACK_REFUSED))]  # fmt: skip
    assert root.stats.malformed == 2 and root.stats.refused == 2 and root.tally() == {(1, "fw", "t"): 2}
    # the root's clock went back a week: its open tally is not mixed with another window's reports
    root.receive(report_frame(CountRecord(W - 1, 1, "fw", "t", 1)), "f", window_start(W - 1) + 5)
    assert root.frames_to_send() == [("f", ack_frame(W - 1, ACK_REFUSED))] and root.window == W
    node = _node(3)
    node.handle_timer(t)
    node.handle_timer(node.next_timer() or t)
    node.receive(ack_frame(W, ACK_REFUSED), t)  # refused: stops for this window, counted nowhere
    assert node.refused == 1 and node.next_timer() == window_start(W + 1)


def test_undelivered_records_older_than_last_week_are_dropped() -> None:
    root = RootCounter(MemoryFlash(4096), commit_interval=0)
    root.receive(report_frame(CountRecord(W, 1, "fw", "t", 1)), "a", window_start(W) + 1)
    root.handle_timer(window_start(W + 1))
    assert len(root.pending()) == 1
    root.handle_timer(window_start(W + 2) - 1)
    assert len(root.pending()) == 1  # the server still takes last week's
    root.handle_timer(window_start(W + 2))
    assert root.pending() == []


def test_a_corrupt_tally_record_does_not_stop_the_root() -> None:
    flash = MemoryFlash(4096)
    flash.write_record(ROOT_RECORD, b"\x00\x00\x0b")
    root = RootCounter(flash)
    assert root.window is None and root.pending() == []


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 29),
    st.one_of(st.integers(), st.text(max_size=8), st.tuples(st.text(max_size=8), st.integers(0, 65535))),
    st.floats(0, 6 * 86400),
    st.integers(0, 2**32),
)
def test_records_unchanged_when_one_nodes_address_or_report_time_changes(
    which: int, address: Hashable, shift: float, seed: int
) -> None:
    """What leaves the mesh depends on the counts only: not on a node's link address (its id
    on the hop), nor on when in the window it reported, nor on the order of reports."""

    def records(moved: bool) -> list[bytes]:
        root = RootCounter(MemoryFlash(4096), commit_interval=0)
        rng = random.Random(seed)
        reports = []
        for i in range(30):
            sender: Hashable = ("node", i)
            when = window_start(W) + rng.uniform(0, 6 * 86400)
            if moved and i == which:
                sender, when = ("moved", address), window_start(W) + shift
            rec = CountRecord(W, 1 + i % 4, f"fw-{i % 3}", "esp32" if i % 5 else "nrf52", 1)
            reports.append((when, sender, report_frame(rec)))
        for when, sender, frame in sorted(reports, key=lambda r: r[0]):
            root.receive(frame, sender, when)
        root.handle_timer(window_start(W + 1))
        return root.pending()

    assert records(False) == records(True)


def test_window_boundary_on_the_virtual_clock() -> None:
    node = _node(4)
    node.handle_timer(window_start(W + 1) - 10)  # started ten seconds before the week ends
    due = node.next_timer()
    assert due is not None and due <= window_start(W + 1)
    assert window_of(window_start(W + 1) - 1) == W and WEEK == 604800
    node.handle_timer(window_start(W + 1))
    nxt = node.next_timer()
    assert nxt is not None and window_of(nxt) == W + 1


@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_many_windows_every_node_every_week(loss: float) -> None:
    nodes: dict[Hashable, NodeCounter] = {i: _node(i) for i in range(20)}
    for n in nodes.values():
        n.handle_timer(window_start(W))
    root = RootCounter(MemoryFlash(1 << 16))
    delivered: list[CountRecord] = []
    for week in range(3):
        _run(nodes, root, window_start(W + week + 1), loss=loss, rng=random.Random(week))
        root.handle_timer(window_start(W + week + 1))
        for r in root.pending():
            delivered.append(decode_count_record(r))
            root.delivered(r)
    assert [(r.window, r.count) for r in delivered] == [(W, 20), (W + 1, 20), (W + 2, 20)]


def _published(nodes: list[tuple[Hashable, float, int, CountRecord]], roots: int) -> tuple[bytes, bytes]:
    """Every node reports to its root at its moment; the roots' sealed records, added once per
    (root, cell) as the server does, published as /stats/fleet/weekly.json and .csv."""
    counters = [RootCounter(MemoryFlash(1 << 16)) for _ in range(roots)]
    for address, when, root, rec in sorted(nodes, key=lambda n: n[1]):
        counters[root].receive(report_frame(rec), address, when)
        counters[root].handle_timer(when + 1.0)
    cells: dict[CellKey, int] = {}
    for counter in counters:
        counter.handle_timer(window_start(W + 1))
        for raw in counter.pending():
            r = decode_count_record(raw)
            key = cell_key(r.window, "mesh", r.bucket, r.device_type, r.version)
            cells[key] = cells.get(key, 0) + r.count
    doc = publish(cells)
    return render_json(doc), render_csv(doc)


def _mesh(seed: int, n: int = 1000) -> list[tuple[Hashable, float, int, CountRecord]]:
    """``n`` nodes: (link address, moment of report in the week, root, its report)."""
    rng = random.Random(seed)
    return [
        (f"fd00::{rng.getrandbits(32):x}", window_start(W) + rng.uniform(0, WEEK - 2), rng.randrange(4),
         CountRecord(W, rng.choice([1, 1, 2, 3, 4]), rng.choice(["fw-1.0", "fw-1.0", "fw-1.1", "fw-2.0"]),
                     rng.choice(["esp32-c6", "nrf52840"]), 1))
        for _ in range(n)
    ]  # fmt: skip


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 999), st.text(min_size=1, max_size=40), st.floats(0, WEEK - 2))
def test_public_outputs_unchanged_when_one_nodes_id_address_or_report_time_changes(
    seed: int, which: int, new_address: str, new_at: float
) -> None:
    """1,000 nodes under 4 roots: the published fleet statistics do not move when one node's
    link address (the only id a root sees) or its moment of report changes, nor with the order."""
    nodes = _mesh(seed)
    before = _published(nodes, 4)
    address, at, root, rec = nodes[which]
    for changed in ((new_address, at), (address, window_start(W) + new_at)):
        moved = list(nodes)
        moved[which] = (*changed, root, rec)
        assert _published(moved, 4) == before
    assert b"nodes-mesh" in before[0]
