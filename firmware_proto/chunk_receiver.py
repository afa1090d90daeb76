"""Per-stream receive state of one node: verified pages and chunks written into the inactive slot.

Blocks ``0 .. page_count-1`` are map pages, the rest are image chunks (SPEC.md §2.2). A page is
accepted only if its leaves and authentication path lead to the signed Merkle root; a chunk only
if its hash equals its (already verified) leaf. A chunk whose page has not been verified yet is
*parked*: written into its place in the slot but not claimed in the bitmap, its index kept in RAM;
when the page arrives the parked chunks are read back and checked like any other (a lost page then
costs one page frame, not the page's whole run of chunks). A power cut forgets parked chunks.

Persistence order keeps a power cut harmless: slot data is written before the bitmap bit that
claims it, so a cut can only forget a chunk, never claim one that is not there.

Parts (SPEC.md §3.2): a block may arrive as PART frames, each one link frame. A chunk's parts are
written into their place in the slot, a page's kept in RAM, and which parts arrived is kept per
block in RAM (at most ``max_partial`` blocks partly held: a part of another block is then dropped
and its block asked for whole later). When the last part arrives the block is read back and
checked exactly as a DATA payload; if it fails, every part of it is forgotten (the block is asked
for again), so a tampered part is never claimed, forwarded or installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firmware_proto.flash_store import ChunkBitmap, FlashStore
from wire.chunk_map import HASH_LEN, ChunkMap, MapHead, leaf_hash, page_root_from_path
from wire.frames import PARTS_ALL, PARTS_MAX

__all__ = [
    "MAX_PARTIAL",
    "REC_BITMAP",
    "REC_HEAD",
    "REC_LEAVES",
    "BlockResult",
    "ChunkReceiver",
]

REC_HEAD = "head"
REC_BITMAP = "bitmap"
REC_LEAVES = "leaves"


@dataclass(frozen=True, slots=True)
class BlockResult:
    accepted: bool
    reason: str = ""


_DUPLICATE = BlockResult(False, "duplicate")  # frozen: one object for the most common answer
_ACCEPTED = BlockResult(True)
_PART_KEPT = BlockResult(False, "part kept")
MAX_PARTIAL = 256  # blocks partly held at once (RAM: a count and a 16-bit mask each; pages' bytes)


@dataclass(slots=True)
class _Partial:
    count: int  # the block's parts
    held: int  # bit 15 - j set: part j arrived
    data: bytearray | None = None  # a page's parts (a chunk's are in the slot)


def _all_parts(count: int) -> int:
    return (0xFFFF << (16 - count)) & 0xFFFF


_ALL_PARTS = [_all_parts(c) for c in range(PARTS_MAX + 1)]  # by count


class ChunkReceiver:
    # one per simulated node, looked at for every frame it hears: no per-instance dict
    __slots__ = (
        "bitmap",
        "chunks_verified",
        "flash",
        "head",
        "leaves",
        "max_partial",
        "parked",
        "partial",
        "paths",
        "slot",
    )

    def __init__(
        self,
        flash: FlashStore,
        slot: int,
        head: MapHead,
        *,
        restore: bool = False,
        max_partial: int = MAX_PARTIAL,
    ) -> None:
        self.flash = flash
        self.max_partial = max_partial
        self.partial: dict[int, _Partial] = {}  # block → parts arrived (RAM; a power cut forgets)
        self.slot = slot
        self.head = head
        bits = flash.read_record(REC_BITMAP) if restore else None
        leaves = flash.read_record(REC_LEAVES) if restore else None
        self.bitmap = ChunkBitmap(head.block_count, bits)
        self.leaves = bytearray(leaves) if leaves is not None else bytearray(head.chunk_count * HASH_LEN)
        self.parked: set[int] = set()  # chunks written to the slot whose page is not verified yet
        # authentication paths of the pages verified by this instance (RAM): with the leaves they
        # rebuild a page's DATA payload, so a relay can forward it (firmware_proto.block_source)
        self.paths: dict[int, bytes] = {}
        self.chunks_verified = 0  # chunks whose hash matched their signed leaf, in this instance
        if len(self.leaves) != head.chunk_count * HASH_LEN:
            raise ValueError("leaves record has a wrong length")

    @classmethod
    def start(cls, flash: FlashStore, slot: int, head: MapHead) -> ChunkReceiver:
        """A fresh stream: persist the head, erase the slot, empty bitmap."""
        flash.write_record(REC_HEAD, head.encode())
        flash.delete_record(REC_BITMAP)
        flash.delete_record(REC_LEAVES)
        flash.erase_slot(slot)
        return cls(flash, slot, head)

    @staticmethod
    def forget(flash: FlashStore) -> None:
        for name in (REC_HEAD, REC_BITMAP, REC_LEAVES):
            flash.delete_record(name)

    def _persist(self, leaves: bool) -> None:
        if leaves:
            self.flash.write_record(REC_LEAVES, bytes(self.leaves))
        self.flash.write_record(REC_BITMAP, self.bitmap.to_bytes())

    @property
    def complete(self) -> bool:
        return self.bitmap.complete

    def missing(self) -> list[int]:
        return self.bitmap.missing()

    def accept_block(self, block: int, payload: bytes, *, in_slot: bool = False) -> BlockResult:
        """A DATA payload (``in_slot``: a chunk whose bytes its parts already wrote to the slot)."""
        head = self.head
        if not 0 <= block < head.block_count:
            return BlockResult(False, "block index out of range")
        if block in self.bitmap:
            return _DUPLICATE
        self.partial.pop(block, None)
        if block < head.page_count:
            return self._accept_page(block, payload)
        chunk = block - head.page_count
        page = chunk // head.leaves_per_page
        if len(payload) != head.chunk_length(chunk):
            return BlockResult(False, "chunk has a wrong length")
        if page not in self.bitmap:
            if not in_slot:  # unclaimed until checked
                self.flash.write_slot(self.slot, chunk * head.chunk_size, payload)
            self.parked.add(chunk)
            return BlockResult(False, "page not verified yet")
        if leaf_hash(payload) != bytes(self.leaves[chunk * HASH_LEN : (chunk + 1) * HASH_LEN]):
            return BlockResult(False, "chunk hash mismatch")
        if not in_slot:
            self.flash.write_slot(self.slot, chunk * head.chunk_size, payload)
        self.bitmap.add(block)
        self.chunks_verified += 1
        self._persist(leaves=False)
        return _ACCEPTED

    def accept_part(self, block: int, index: int, count: int, payload: bytes) -> BlockResult:
        """Part ``index`` of ``count`` of a block (SPEC.md §3.2): kept until the block is whole,
        then the block is checked as :meth:`accept_block` does; a block that fails loses its parts."""
        return self.accept_parts(block, ((index, count, payload),))[0]

    def accept_parts(self, block: int, parts: Sequence[tuple[int, int, bytes]]) -> list[BlockResult]:
        """``(index, count, payload)`` parts of one block, in order (a burst): the results
        :meth:`accept_part` gives for each in turn. A chunk's parts that follow each other in the
        slot are written with one flash write (the slot holds the same bytes either way; the
        write happens before anything reads the slot)."""
        head = self.head
        if not 0 <= block < head.block_count:
            return [BlockResult(False, "block index out of range")] * len(parts)
        results: list[BlockResult] = []
        length = self.block_length(block)
        page = block < head.page_count
        base = 0 if page else (block - head.page_count) * head.chunk_size
        run: list[bytes] = []  # new parts of a chunk not written yet, contiguous in the slot
        run_at = run_end = 0
        partial = self.partial
        held = block in self.bitmap
        append = results.append
        cut = size = -1  # the count the part sizes below are for
        state = partial.get(block)
        for index, count, payload in parts:
            if held:
                append(_DUPLICATE)
                continue
            if count != cut:
                if not 1 <= count <= PARTS_MAX:
                    append(BlockResult(False, "part index out of range"))
                    continue
                cut, size = count, -(-length // count)
            if not 0 <= index < count:
                append(BlockResult(False, "part index out of range"))
                continue
            start = index * size  # part_bounds, inlined
            if start > length:
                start = length
            end = start + size if start + size < length else length
            if end - start != len(payload) or not payload:
                append(BlockResult(False, "part has a wrong length"))
                continue
            if state is not None and state.count != count:  # another cut of the block: start over
                del partial[block]
                state = None
            if state is None:
                if len(partial) >= self.max_partial:
                    append(BlockResult(False, "too many partly held blocks"))
                    continue
                state = _Partial(count, 0, bytearray(length) if page else None)
                partial[block] = state
            bit = 0x8000 >> index
            if state.held & bit:
                append(_DUPLICATE)
                continue
            if state.data is not None:
                state.data[start:end] = payload
            elif run and base + start == run_end:
                run.append(payload)
                run_end += len(payload)
            else:
                if run:
                    self.flash.write_slot(self.slot, run_at, b"".join(run))
                run, run_at, run_end = [payload], base + start, base + end
            state.held |= bit
            if state.held != _ALL_PARTS[count]:
                append(_PART_KEPT)
                continue
            del partial[block]
            done, state = state, None
            if done.data is not None:
                append(self.accept_block(block, bytes(done.data)))
            else:
                whole = b""
                if run:
                    joined = b"".join(run)
                    self.flash.write_slot(self.slot, run_at, joined)
                    if run_at == base and len(joined) == length:  # the whole block came in this run
                        whole = joined
                    run = []
                if not whole:
                    whole = self.flash.read_slot(self.slot, base, length)
                append(self.accept_block(block, whole, in_slot=True))
            held = block in self.bitmap
        if run:
            self.flash.write_slot(self.slot, run_at, b"".join(run))
        return results

    def missing_parts(self, block: int) -> int:
        """Missing-parts mask of a block not held (:data:`~wire.frames.PARTS_ALL` if none of
        its parts arrived), bit 15 - j = part j."""
        state = self.partial.get(block)
        if state is None:
            return PARTS_ALL
        return _all_parts(state.count) & ~state.held

    def _accept_page(self, page: int, payload: bytes) -> BlockResult:
        head = self.head
        count = head.page_leaf_count(page)
        if len(payload) != (count + head.tree_depth) * HASH_LEN:
            return BlockResult(False, "page has a wrong length")
        hashes = [payload[i : i + HASH_LEN] for i in range(0, len(payload), HASH_LEN)]
        if page_root_from_path(hashes[:count], head, page, hashes[count:]) != head.merkle_root:
            return BlockResult(False, "page does not match the signed Merkle root")
        first = page * head.leaves_per_page
        self.leaves[first * HASH_LEN : (first + count) * HASH_LEN] = payload[: count * HASH_LEN]
        self.paths[page] = bytes(payload[count * HASH_LEN :])
        self.bitmap.add(page)
        for chunk in sorted(c for c in self.parked if first <= c < first + count):
            self.parked.discard(chunk)
            data = self.flash.read_slot(self.slot, chunk * head.chunk_size, head.chunk_length(chunk))
            if leaf_hash(data) == bytes(self.leaves[chunk * HASH_LEN : (chunk + 1) * HASH_LEN]):
                self.bitmap.add(head.page_count + chunk)
                self.chunks_verified += 1
        self._persist(leaves=True)
        return _ACCEPTED

    def accept_map(self, cmap: ChunkMap) -> None:
        """A full map fetched end to end (fallback): every page becomes known at once."""
        if cmap.head.encode() != self.head.encode():
            raise ValueError("map is for another stream")
        self.leaves[:] = b"".join(cmap.leaves)
        for page, data in enumerate(cmap.page_payloads()):
            self.paths[page] = data[self.head.page_leaf_count(page) * HASH_LEN :]
            self.bitmap.add(page)
        self._persist(leaves=True)

    def page_payload(self, page: int) -> bytes | None:
        """A verified page's DATA payload (its leaves and authentication path); None if this
        instance did not verify it (a power cut forgets the paths)."""
        path = self.paths.get(page)
        if path is None or page not in self.bitmap:
            return None
        first = page * self.head.leaves_per_page
        count = self.head.page_leaf_count(page)
        return bytes(self.leaves[first * HASH_LEN : (first + count) * HASH_LEN]) + path

    def block_payload(self, block: int) -> bytes | None:
        """A held block's DATA payload (a chunk read back from the slot); None if not held."""
        if block not in self.bitmap:
            return None
        head = self.head
        if block < head.page_count:
            return self.page_payload(block)
        chunk = block - head.page_count
        return self.flash.read_slot(self.slot, chunk * head.chunk_size, head.chunk_length(chunk))

    def block_length(self, block: int) -> int:
        head = self.head
        if block < head.page_count:
            return (head.page_leaf_count(block) + head.tree_depth) * HASH_LEN
        return head.chunk_length(block - head.page_count)

    def image(self) -> bytes:
        return self.flash.read_slot(self.slot, 0, self.head.artifact_size)
