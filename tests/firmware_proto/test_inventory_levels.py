"""Node inventory levels (issue 18); counting is tests/firmware_proto/test_counting.py."""

from __future__ import annotations

import json

import pytest

from firmware_proto.inventory_levels import InventoryError, NodeInventory, record_bytes
from meshota.cli.telemetry import telemetry_main

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
