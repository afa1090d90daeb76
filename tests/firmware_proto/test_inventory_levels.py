"""Node inventory levels and a root's count aggregation (issue 18)."""

from __future__ import annotations

import json

import pytest

from firmware_proto.inventory_levels import (
    CountAggregator,
    InventoryError,
    NodeInventory,
    count_frame,
    record_bytes,
)
from meshota.cli.telemetry import telemetry_main
from wire.countme import CountRecord, decode_count_record, window_start

W = 2950
INV = NodeInventory("esp32-c6", "fw-1.2.0", "rev-b", "ble-mesh", ("n2", "n3"))


def test_minimal_is_the_default_and_full_adds_hardware_radio_neighbours(
    capsys: pytest.CaptureFixture[str],
) -> None:
    minimal = json.loads(record_bytes(INV, "minimal"))
    assert {a["name"] for a in minimal} == {"device_type", "artifact_name"}
    full = {a["name"]: a["value"] for a in json.loads(record_bytes(INV, "full"))}
    assert full == {"device_type": "esp32-c6", "artifact_name": "fw-1.2.0", "hardware": "rev-b",
                    "radio": "ble-mesh", "neighbours": "n2,n3"}  # fmt: skip
    argv = ["node-record", "--device-type", "esp32-c6", "--firmware-version", "fw-1.2.0"]
    assert telemetry_main(argv) == 0
    assert capsys.readouterr().out.encode() == record_bytes(INV, "minimal") + b"\n"
    with pytest.raises(InventoryError):
        record_bytes(INV, "everything")
    with pytest.raises(InventoryError):
        record_bytes(NodeInventory("esp32", "fw 1 (serial 1234)"), "minimal")


def test_root_sends_one_record_per_cell_and_counts_each_child_once() -> None:
    agg = CountAggregator()
    t = window_start(W) + 100
    for child in range(7):
        inv = NodeInventory("esp32", "fw-1" if child < 5 else "fw-2")
        for _ in range(3):  # a child repeating its frame is counted once
            agg.receive(count_frame(inv, W - 30, t), f"child-{child}", t + child)
    agg.receive(count_frame(NodeInventory("esp32", "fw-1"), W, t), "root", t)
    assert agg.refused == 14 and agg.next_timer() == window_start(W + 1)
    agg.handle_timer(window_start(W) + 1000)
    assert agg.records() == []  # the window is not over
    agg.handle_timer(window_start(W + 1))
    records = [decode_count_record(r) for r in agg.records()]
    assert len(records) == 3 and set(records) == {
        CountRecord(W, 1, "fw-1", "esp32", 1), CountRecord(W, 4, "fw-1", "esp32", 5),
        CountRecord(W, 4, "fw-2", "esp32", 2),
    }  # fmt: skip
    assert agg.records() == [] and agg.next_timer() is None
