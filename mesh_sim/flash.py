"""A :class:`firmware_proto.flash_store.FlashStore` for thousands of simulated nodes.

Same behaviour as :class:`firmware_proto.testing.flash.MemoryFlash` (atomic records, two
erasable slots, 0xFF where nothing was written), but a slot is kept as the pieces written into
it, and equal pieces are shared between nodes through one pool: 10,000 nodes holding the same
256 KiB image cost the image once, not 2.5 GB. The update agent, chunk receiver, bootloader and
relay run on it unchanged.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

__all__ = ["SharedSlotFlash"]

SLOT_COUNT = 2


class SharedSlotFlash:
    def __init__(self, slot_size: int, pool: dict[bytes, bytes]) -> None:
        self.slot_size = slot_size
        self.records: dict[str, bytes] = {}
        self._pool = pool
        self._slots: list[dict[int, bytes]] = [{} for _ in range(SLOT_COUNT)]
        # per slot: the pieces' offsets, sorted (reads find their first piece by bisection), and
        # whether two pieces ever overlapped (then reads take the general path)
        self._starts: list[list[int]] = [[] for _ in range(SLOT_COUNT)]
        self._overlap = [False] * SLOT_COUNT
        self.writes = 0

    def _check(self, slot: int, offset: int, length: int) -> None:
        if not 0 <= slot < SLOT_COUNT or offset < 0 or length < 0 or offset + length > self.slot_size:
            raise ValueError(f"slot access out of range: slot {slot} [{offset}, {offset + length})")

    def read_record(self, name: str) -> bytes | None:
        return self.records.get(name)

    def write_record(self, name: str, data: bytes) -> None:
        self.writes += 1
        self.records[name] = bytes(data)

    def delete_record(self, name: str) -> None:
        self.records.pop(name, None)

    def erase_slot(self, slot: int) -> None:
        self._check(slot, 0, 0)
        self.writes += 1
        self._slots[slot] = {}
        self._starts[slot] = []
        self._overlap[slot] = False

    def write_slot(self, slot: int, offset: int, data: bytes) -> None:
        self._check(slot, offset, len(data))
        self.writes += 1
        pieces = self._slots[slot]
        data = bytes(data)  # (the same object when it is bytes already)
        if len(data) >= 64:
            data = self._pool.setdefault(data, data)
        starts = self._starts[slot]
        if not starts or offset > starts[-1]:  # past every piece (a stream in order): no bisection
            if starts and starts[-1] + len(pieces[starts[-1]]) > offset:
                self._overlap[slot] = True
            starts.append(offset)
            pieces[offset] = data
            return
        i = bisect_left(starts, offset)
        fresh = i == len(starts) or starts[i] != offset
        if not fresh and len(pieces[offset]) > len(data):  # a shorter write over a piece: keep its
            # tail as it reads now (what was pasted over it included), so no byte is forgotten
            data += self.read_slot(slot, offset + len(data), len(pieces[offset]) - len(data))
            if len(data) >= 64:
                data = self._pool.setdefault(data, data)
        if not self._overlap[slot]:
            j = i if fresh else i + 1
            if (i > 0 and starts[i - 1] + len(pieces[starts[i - 1]]) > offset) or (
                j < len(starts) and starts[j] < offset + len(data)
            ):
                self._overlap[slot] = True
        if fresh:
            starts.insert(i, offset)
        pieces.pop(offset, None)  # re-insert: later writes are pasted last
        pieces[offset] = data

    def read_slot(self, slot: int, offset: int, length: int) -> bytes:
        self._check(slot, offset, length)
        pieces = self._slots[slot]
        end = offset + length
        if self._overlap[slot]:  # (a piece at the offset may have been written over since)
            joined = self._read_contiguous(pieces, offset, end)
        else:
            exact = pieces.get(offset)
            if exact is not None and len(exact) == length:
                return exact
            joined = self._read_sorted(pieces, self._starts[slot], offset, end)
        if joined is not None:
            return joined
        out = bytearray(b"\xff" * length)
        for at, data in pieces.items():
            stop = at + len(data)
            if stop <= offset or at >= end:
                continue
            lo, hi = max(at, offset), min(stop, end)
            out[lo - offset : hi - offset] = data[lo - at : hi - at]
        return bytes(out)

    @staticmethod
    def _read_sorted(pieces: dict[int, bytes], starts: list[int], offset: int, end: int) -> bytes | None:
        """:meth:`_read_contiguous` for pieces that never overlapped: the first candidate piece
        is found by bisection in the sorted offsets."""
        i = max(0, bisect_right(starts, offset) - 1)
        at = offset
        parts: list[bytes] = []
        n = len(starts)
        while i < n:
            start = starts[i]
            i += 1
            data = pieces[start]
            stop = start + len(data)
            if stop <= offset or not data:
                continue
            if start >= end:
                break
            if start != at:
                return None
            parts.append(data)
            at = stop
            if at >= end:
                break
        if at < end:
            return None
        if at > end:
            parts[-1] = parts[-1][: len(parts[-1]) - (at - end)]
        return b"".join(parts)

    @staticmethod
    def _read_contiguous(pieces: dict[int, bytes], offset: int, end: int) -> bytes | None:
        """Fast path: the range is covered by pieces that chain without gap or overlap (a streamed
        image); anything else (``None``) is pasted piece by piece in write order."""
        at = offset
        parts: list[bytes] = []
        for start in sorted(pieces):
            data = pieces[start]
            stop = start + len(data)
            if stop <= offset or not data:
                continue
            if start >= end:
                break
            if start != at:  # a gap, an overlap or a piece straddling the start
                return None
            parts.append(data)
            at = stop
        if at < end:
            return None
        if at > end:
            parts[-1] = parts[-1][: len(parts[-1]) - (at - end)]
        return b"".join(parts)
