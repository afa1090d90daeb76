"""In-memory flash for tests and simulations, and a wrapper that cuts the power at the n-th write.

Both implement :class:`firmware_proto.flash_store.FlashStore`; a device keeps its flash in a
directory (:class:`firmware_proto.flash_store.FileFlash`).
"""

from __future__ import annotations

from firmware_proto.flash_store import SLOT_COUNT, FlashStore, check_slot_range

__all__ = ["MemoryFlash", "PowerCut", "PowerCutFlash"]


class PowerCut(Exception):
    """Raised by :class:`PowerCutFlash` instead of performing the cut write."""


class MemoryFlash:
    def __init__(self, slot_size: int = 1 << 20) -> None:
        self.slot_size = slot_size
        self.records: dict[str, bytes] = {}
        self.slots = [bytearray(b"\xff" * slot_size) for _ in range(SLOT_COUNT)]

    def read_record(self, name: str) -> bytes | None:
        return self.records.get(name)

    def write_record(self, name: str, data: bytes) -> None:
        self.records[name] = bytes(data)

    def delete_record(self, name: str) -> None:
        self.records.pop(name, None)

    def erase_slot(self, slot: int) -> None:
        check_slot_range(slot, 0, 0, self.slot_size)
        self.slots[slot][:] = b"\xff" * self.slot_size

    def write_slot(self, slot: int, offset: int, data: bytes) -> None:
        check_slot_range(slot, offset, len(data), self.slot_size)
        self.slots[slot][offset : offset + len(data)] = data

    def read_slot(self, slot: int, offset: int, length: int) -> bytes:
        check_slot_range(slot, offset, length, self.slot_size)
        return bytes(self.slots[slot][offset : offset + length])


class PowerCutFlash:
    """Counts writes (records, erases, slot writes) and raises PowerCut instead of write ``cut_at``."""

    def __init__(self, inner: FlashStore, cut_at: int | None = None) -> None:
        self.inner = inner
        self.slot_size = inner.slot_size
        self.cut_at = cut_at
        self.writes = 0
        self.log: list[str] = []

    def _tick(self, what: str) -> None:
        if self.cut_at is not None and self.writes == self.cut_at:
            self.cut_at = None
            raise PowerCut(what)
        self.writes += 1
        self.log.append(what)

    def read_record(self, name: str) -> bytes | None:
        return self.inner.read_record(name)

    def write_record(self, name: str, data: bytes) -> None:
        self._tick(f"record {name}")
        self.inner.write_record(name, data)

    def delete_record(self, name: str) -> None:
        self._tick(f"delete {name}")
        self.inner.delete_record(name)

    def erase_slot(self, slot: int) -> None:
        self._tick(f"erase {slot}")
        self.inner.erase_slot(slot)

    def write_slot(self, slot: int, offset: int, data: bytes) -> None:
        self._tick(f"slot {slot}@{offset}")
        self.inner.write_slot(slot, offset, data)

    def read_slot(self, slot: int, offset: int, length: int) -> bytes:
        return self.inner.read_slot(slot, offset, length)
