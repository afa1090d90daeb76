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

SLOT_COUNT = 2  # (slots 0 and 1: the range checks of write_slot/read_slot are inlined for them)
_JOINS_MAX = 65_536


class SharedSlotFlash:
    __slots__ = ("_joins", "_pool", "_slots", "_starts", "records", "slot_size", "writes")

    def __init__(
        self,
        slot_size: int,
        pool: dict[bytes, bytes],
        joins: dict[tuple[int | bytes, ...], tuple[tuple[bytes, ...], bytes]] | None = None,
    ) -> None:
        self.slot_size = slot_size
        self.records: dict[str, bytes] = {}
        self._pool = pool
        # whole pieces read back as one (read_slot), by the pieces' identities: a sequence of
        # shared pieces joined once for every node holding it (10,000 nodes reading one 256 KiB
        # image: one join, not 10,000 joins each hashed into the pool); the entry keeps its
        # pieces alive, so an id in a key never belongs to another object
        self._joins = joins if joins is not None else {}
        # per slot: pieces that never overlap (a write trims what it covers of older pieces), by
        # offset, and their offsets sorted (reads find their first piece by bisection)
        self._slots: list[dict[int, bytes]] = [{} for _ in range(SLOT_COUNT)]
        self._starts: list[list[int]] = [[] for _ in range(SLOT_COUNT)]
        self.writes = 0

    def _check(self, slot: int, offset: int, length: int) -> None:
        if not 0 <= slot < SLOT_COUNT or offset < 0 or length < 0 or offset + length > self.slot_size:
            raise ValueError(f"slot access out of range: slot {slot} [{offset}, {offset + length})")

    def read_record(self, name: str) -> bytes | None:
        return self.records.get(name)

    def write_record(self, name: str, data: bytes) -> None:
        self.writes += 1
        self.records[name] = data if type(data) is bytes else bytes(data)

    def delete_record(self, name: str) -> None:
        self.records.pop(name, None)

    def erase_slot(self, slot: int) -> None:
        self._check(slot, 0, 0)
        self.writes += 1
        self._slots[slot] = {}
        self._starts[slot] = []

    def _shared(self, data: bytes) -> bytes:
        return self._pool.setdefault(data, data) if len(data) >= 64 else data

    def write_slot(self, slot: int, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if not (slot == 0 or slot == 1) or offset < 0 or end > self.slot_size:  # _check, inlined
            self._check(slot, offset, len(data))
        self.writes += 1
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) >= 64:  # _shared, inlined
            data = self._pool.setdefault(data, data)
        pieces = self._slots[slot]
        starts = self._starts[slot]
        if not starts or offset >= starts[-1] + len(pieces[starts[-1]]):  # past every piece
            starts.append(offset)
            pieces[offset] = data
            return
        i = bisect_left(starts, offset)  # the first piece starting at or after the offset
        if i > 0:  # the piece before may reach into the range: keep what lies outside it
            before = starts[i - 1]
            old = pieces[before]
            stop = before + len(old)
            if stop > offset:
                pieces[before] = self._shared(old[: offset - before])
                if stop > end:  # it covered the whole range: its tail stays after the new piece
                    starts[i:i] = [offset, end]
                    pieces[offset] = data
                    pieces[end] = self._shared(old[end - before :])
                    return
        j = i
        while j < len(starts) and starts[j] < end:  # pieces starting inside the range
            j += 1
        if j > i:
            last = starts[j - 1]
            old = pieces[last]
            for at in starts[i:j]:
                del pieces[at]
            del starts[i:j]
            if last + len(old) > end:  # the last one sticks out: keep its tail
                starts.insert(i, end)
                pieces[end] = self._shared(old[end - last :])
        starts.insert(i, offset)
        pieces[offset] = data

    def read_slot(self, slot: int, offset: int, length: int) -> bytes:
        """The bytes as written (0xFF where nothing was). A range that is exactly several whole
        pieces (a block written part by part, read back whole) becomes one shared piece: the
        same bytes, and the next read of it is a lookup."""
        if not (slot == 0 or slot == 1) or offset < 0 or length < 0 or offset + length > self.slot_size:
            self._check(slot, offset, length)
        pieces = self._slots[slot]
        exact = pieces.get(offset)
        if exact is not None and len(exact) == length:
            return exact
        starts = self._starts[slot]
        end = offset + length
        first = i = max(0, bisect_right(starts, offset) - 1)
        at = offset
        parts: list[bytes] = []
        n = len(starts)
        whole = True  # the range is whole pieces, without gaps
        while i < n:
            start = starts[i]
            if start >= end:
                break
            data = pieces[start]
            i += 1
            stop = start + len(data)
            if stop <= offset:
                first = i
                continue
            if start > at:  # never written: erased
                whole = False
                parts.append(b"\xff" * (start - at))
                at = start
            if at > start or stop > end:
                whole = False
                parts.append(data[at - start : end - start])
            else:
                parts.append(data)
            at = min(stop, end)
        if at < end:
            whole = False
            parts.append(b"\xff" * (end - at))
        if whole and len(parts) > 1:
            key = tuple(p if len(p) < 64 else id(p) for p in parts)
            hit = self._joins.get(key)
            if hit is not None:
                joined = hit[1]
            else:
                joined = self._shared(b"".join(parts))
                if len(self._joins) >= _JOINS_MAX:
                    self._joins.clear()
                self._joins[key] = (tuple(parts), joined)
            for start in starts[first:i]:
                del pieces[start]
            starts[first:i] = [offset]
            pieces[offset] = joined
            return joined
        return b"".join(parts)
