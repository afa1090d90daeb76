"""Node inventory at the level its owner sets.

Levels: ``minimal`` (the default: device type and firmware version) and ``full`` (also hardware,
radio profile and neighbours). :func:`record_bytes` is the exact body of the inventory record a
node sends at a level (the JSON the device API receives, through a sealed record or directly):
``meshota telemetry node-record --level L`` prints it.

Counting (a node's weekly report to its root, the root's one sealed record per cell) is
:mod:`firmware_proto.counting`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from wire.countme import CountRecordError, check_label
from wire.errors import WireError

__all__ = [
    "LEVELS",
    "InventoryError",
    "NodeInventory",
    "inventory_attributes",
    "record_bytes",
]

LEVELS = ("minimal", "full")
_MAX_NEIGHBOURS = 32


class InventoryError(WireError):
    """A level or a field a record cannot carry."""


@dataclass(frozen=True, slots=True)
class NodeInventory:
    device_type: str
    firmware_version: str
    hardware: str = ""
    radio: str = ""
    neighbours: tuple[str, ...] = ()


def inventory_attributes(inv: NodeInventory, level: str) -> list[dict[str, str]]:
    """Mender inventory attributes of ``level`` (minimal: device_type, artifact_name)."""
    if level not in LEVELS:
        raise InventoryError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    try:
        attrs = {
            "device_type": check_label(inv.device_type, "device type"),
            "artifact_name": check_label(inv.firmware_version, "firmware version"),
        }
        if level == "full":
            if len(inv.neighbours) > _MAX_NEIGHBOURS:
                raise InventoryError(f"more than {_MAX_NEIGHBOURS} neighbours")
            attrs["hardware"] = check_label(inv.hardware or "unknown", "hardware")
            attrs["radio"] = check_label(inv.radio or "unknown", "radio")
            attrs["neighbours"] = ",".join(check_label(n, "neighbour") for n in inv.neighbours)
    except CountRecordError as exc:
        raise InventoryError(str(exc)) from None
    return [{"name": k, "value": v} for k, v in attrs.items()]


def record_bytes(inv: NodeInventory, level: str) -> bytes:
    """The exact inventory record (JSON body of ``PUT inventory/device/attributes``)."""
    return json.dumps(inventory_attributes(inv, level), separators=(",", ":")).encode()
