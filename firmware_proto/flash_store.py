"""The node's flash, as the update agent and the bootloader see it: records and two image slots.

A *record* is a small named blob written atomically (on an MCU: a wear-levelled key-value area
with copy-then-switch, e.g. Zephyr NVS). A *slot* is a raw image partition: erase, write at an
offset, read. Every write is one operation a power cut can interrupt; records are never
half-written, a slot write that is cut did not happen (tests model the cut *before* the write).

Backend here: :class:`FileFlash` (a directory per device; records via write-to-temp + rename,
fsynced; reopening the directory is a power cycle — ``meshota demo --live`` keeps every node's
flash this way, tests/firmware_proto/test_file_flash.py cuts its power at every write). For tests
and simulations, :mod:`firmware_proto.testing.flash` has ``MemoryFlash`` and ``PowerCutFlash``
(wraps any store and raises ``PowerCut`` at the n-th write); ``mesh_sim.flash`` shares slot
contents between thousands of simulated nodes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

__all__ = ["SLOT_COUNT", "ChunkBitmap", "FileFlash", "FlashStore", "check_slot_range"]

SLOT_COUNT = 2


class FlashStore(Protocol):
    slot_size: int

    def read_record(self, name: str) -> bytes | None: ...
    def write_record(self, name: str, data: bytes) -> None: ...
    def delete_record(self, name: str) -> None: ...
    def erase_slot(self, slot: int) -> None: ...
    def write_slot(self, slot: int, offset: int, data: bytes) -> None: ...
    def read_slot(self, slot: int, offset: int, length: int) -> bytes: ...


def check_slot_range(slot: int, offset: int, length: int, size: int) -> None:
    if slot not in range(SLOT_COUNT) or offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"slot access out of range: slot {slot} [{offset}, {offset + length})")


class FileFlash:
    """Records as files ``rec-<name>`` (atomic rename), slots as ``slot<i>.bin``."""

    def __init__(self, directory: Path, slot_size: int = 1 << 20) -> None:
        self.dir = directory
        self.slot_size = slot_size
        directory.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOT_COUNT):
            path = self._slot(slot)
            if not path.exists() or path.stat().st_size != slot_size:
                path.write_bytes(b"\xff" * slot_size)

    def _slot(self, slot: int) -> Path:
        return self.dir / f"slot{slot}.bin"

    def _record(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad record name {name!r}")
        return self.dir / f"rec-{name}"

    def read_record(self, name: str) -> bytes | None:
        path = self._record(name)
        return path.read_bytes() if path.exists() else None

    def write_record(self, name: str, data: bytes) -> None:
        path = self._record(name)
        tmp = path.with_name(path.name + ".tmp")  # a cut before the rename leaves the old record
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def delete_record(self, name: str) -> None:
        self._record(name).unlink(missing_ok=True)

    def erase_slot(self, slot: int) -> None:
        check_slot_range(slot, 0, 0, self.slot_size)
        self._slot(slot).write_bytes(b"\xff" * self.slot_size)

    def write_slot(self, slot: int, offset: int, data: bytes) -> None:
        check_slot_range(slot, offset, len(data), self.slot_size)
        with self._slot(slot).open("r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_slot(self, slot: int, offset: int, length: int) -> bytes:
        check_slot_range(slot, offset, length, self.slot_size)
        with self._slot(slot).open("rb") as f:
            f.seek(offset)
            return f.read(length)


_ZERO_BITS = [tuple(b for b in range(8) if not v & (0x80 >> b)) for v in range(256)]


class ChunkBitmap:
    """Which blocks of a stream a node holds (verified), persisted as one record."""

    __slots__ = ("_bits", "count", "size")  # one per stream a node receives: compact, looked at per frame

    def __init__(self, size: int, bits: bytes | None = None) -> None:
        self.size = size
        nbytes = (size + 7) // 8
        if bits is not None and len(bits) != nbytes:
            raise ValueError("bitmap record has a wrong length")
        self._bits = bytearray(bits) if bits is not None else bytearray(nbytes)
        self.count = sum(bin(b).count("1") for b in self._bits)

    def __contains__(self, index: int) -> bool:
        return 0 <= index < self.size and self._bits[index >> 3] & (0x80 >> (index & 7)) != 0

    def set_of(self, indexes: Iterable[int]) -> list[int]:
        """The given indexes that are set, ascending (one bit test each, inline)."""
        bits, size = self._bits, self.size
        return sorted(i for i in indexes if 0 <= i < size and bits[i >> 3] & (0x80 >> (i & 7)))

    def add(self, index: int) -> None:
        if index not in self:
            self._bits[index >> 3] |= 0x80 >> (index & 7)
            self.count += 1

    def discard(self, index: int) -> None:
        if index in self:
            self._bits[index >> 3] &= ~(0x80 >> (index & 7)) & 0xFF
            self.count -= 1

    @property
    def complete(self) -> bool:
        return self.count == self.size

    def missing(self) -> list[int]:
        out: list[int] = []
        bits = self._bits
        for i, byte in enumerate(bits):  # whole bytes at a time: a nearly full map is mostly 0xFF
            if byte != 0xFF:
                out.extend(i * 8 + b for b in _ZERO_BITS[byte])
        while out and out[-1] >= self.size:  # padding bits of the last byte
            out.pop()
        return out

    def nack(self, max_bytes: int) -> tuple[int, bytes]:
        """``wire.frames.nack_bitmap(self.missing(), max_bytes)``, computed on the bits as one
        integer (MSB first, as the bitmap itself) without listing the missing blocks."""
        nbits = len(self._bits) * 8
        held = int.from_bytes(self._bits, "big") | ((1 << (nbits - self.size)) - 1)  # padding: held
        miss = ~held & ((1 << nbits) - 1)
        if not miss:
            return 0, b""
        base = nbits - miss.bit_length()
        last = nbits - (miss & -miss).bit_length()
        span = min(last - base + 1, max_bytes * 8)
        width = (span + 7) // 8 * 8
        shift = nbits - base - width
        window = miss >> shift if shift >= 0 else miss << -shift
        window &= ((1 << width) - 1) ^ ((1 << (width - span)) - 1)  # only the first span bits
        return base, window.to_bytes(width // 8, "big")

    def to_bytes(self) -> bytes:
        return bytes(self._bits)
