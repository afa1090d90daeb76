"""Node inventory at the level its owner sets, and counting children without per-node messages.

Levels: ``minimal`` (the default: device type and firmware version) and ``full`` (also hardware,
radio profile and neighbours). :func:`record_bytes` is the exact body of the inventory record a
node sends at a level (the JSON the device API receives, through a sealed record or directly):
``meshota telemetry node-record --level L`` prints it.

Counting: once per countme window a node hands its root a count frame (the node ↔ root hop,
SPEC.md §6)::

    0x43 0x01 count-record(count = 1)       node → root

The root (:class:`CountAggregator`, sans-I/O) counts each child once per window and, when the
window has ended, turns its children's frames (and its own) into ONE count record per (window,
age bucket, firmware version, device type), which it seals with its own record key
(``RecordOp.COUNT``) and sends in its bulk uplink: no per-node count message leaves the mesh.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

from wire.countme import (
    CountRecord,
    CountRecordError,
    age_bucket,
    check_label,
    decode_count_record,
    encode_count_record,
    window_of,
    window_start,
)
from wire.errors import WireError

__all__ = [
    "COUNT_FRAME",
    "LEVELS",
    "CountAggregator",
    "InventoryError",
    "NodeInventory",
    "count_frame",
    "inventory_attributes",
    "record_bytes",
]

LEVELS = ("minimal", "full")
COUNT_FRAME = b"\x43\x01"
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


def count_frame(inv: NodeInventory, first_window: int, now: float) -> bytes:
    """The node's count frame for ``now``'s window (age from its first window, kept in flash)."""
    window = window_of(now)
    rec = CountRecord(window, age_bucket(first_window, window), inv.firmware_version, inv.device_type, 1)
    return COUNT_FRAME + encode_count_record(rec)


class CountAggregator:
    """The root's side: each child counted once per window, at most ``max_children`` per window,
    windows closed once they ended; :meth:`records` hands out the count records to seal."""

    def __init__(self, *, max_children: int = 4096) -> None:
        self.max_children = max_children
        self._seen: dict[int, set[Hashable]] = {}
        self._counts: dict[int, Counter[tuple[int, str, str]]] = {}
        self._ready: list[bytes] = []
        self.refused = 0

    def receive(self, frame: bytes, sender: Hashable, now: float) -> None:
        """A child's count frame (the root's own too, with any sender key of its own)."""
        if not frame.startswith(COUNT_FRAME):
            raise InventoryError("not a count frame")
        rec = decode_count_record(frame[len(COUNT_FRAME) :])
        current = window_of(now)
        if rec.count != 1 or rec.window != current:
            self.refused += 1
            return
        seen = self._seen.setdefault(rec.window, set())
        if sender in seen or len(seen) >= self.max_children:
            self.refused += 1
            return
        seen.add(sender)
        self._counts.setdefault(rec.window, Counter())[(rec.bucket, rec.version, rec.device_type)] += 1

    def next_timer(self) -> float | None:
        return float(window_start(min(self._counts) + 1)) if self._counts else None

    def handle_timer(self, now: float) -> None:
        current = window_of(now)
        for window in sorted(w for w in self._counts if w < current):
            for (bucket, version, dtype), n in sorted(self._counts.pop(window).items()):
                self._ready.append(encode_count_record(CountRecord(window, bucket, version, dtype, n)))
            self._seen.pop(window, None)

    def records(self) -> list[bytes]:
        """Count records to seal (``RecordOp.COUNT``) and send, one per (window, bucket, version, type)."""
        out, self._ready = self._ready, []
        return out
