"""What a streaming core sends from: the whole image (a root, a relay that runs it) or the blocks a
node has verified so far (a relay that forwards while it still downloads: pipelining, issue 21).

Blocks are numbered as on the group link (SPEC.md §2.2): ``0 .. page_count-1`` are signed-map
pages, the rest image chunks. A :class:`ReceiverSource` holds a block only once the node's own
:class:`~firmware_proto.chunk_receiver.ChunkReceiver` verified it (a page against the signed
Merkle root, a chunk against its verified leaf): nothing unverified is forwarded.
"""

from __future__ import annotations

from typing import Protocol

from firmware_proto.chunk_receiver import ChunkReceiver
from wire.chunk_map import ChunkMap, MapHead

__all__ = ["BlockSource", "ImageSource", "ReceiverSource"]


class BlockSource(Protocol):
    @property
    def head(self) -> MapHead: ...

    @property
    def complete(self) -> bool: ...

    @property
    def held(self) -> int:
        """How many blocks this source holds (grows while a relay's node downloads)."""
        ...

    def holds(self, block: int) -> bool: ...

    def held_of(self, blocks: set[int]) -> list[int]:
        """The ``blocks`` this source holds, in ascending order."""
        ...

    def payload(self, block: int) -> bytes: ...


class ImageSource:
    """The whole artifact and its signed chunk map (page payloads built once)."""

    def __init__(self, artifact: bytes, cmap: ChunkMap) -> None:
        if len(artifact) != cmap.head.artifact_size:
            raise ValueError("artifact does not match its map")
        self.artifact = artifact
        self.cmap = cmap
        self._pages: list[bytes] | None = None

    @property
    def head(self) -> MapHead:
        return self.cmap.head

    @property
    def complete(self) -> bool:
        return True

    @property
    def held(self) -> int:
        return self.cmap.head.block_count

    def holds(self, block: int) -> bool:
        return 0 <= block < self.cmap.head.block_count

    def held_of(self, blocks: set[int]) -> list[int]:
        count = self.cmap.head.block_count
        return sorted(b for b in blocks if 0 <= b < count)

    def payload(self, block: int) -> bytes:
        head = self.cmap.head
        if block < head.page_count:
            if self._pages is None:
                self._pages = self.cmap.page_payloads()
            return self._pages[block]
        chunk = block - head.page_count
        return self.artifact[chunk * head.chunk_size : (chunk + 1) * head.chunk_size]


class ReceiverSource:
    """The blocks a node's receiver has verified so far (read back from its slot)."""

    def __init__(self, receiver: ChunkReceiver) -> None:
        self.receiver = receiver

    @property
    def head(self) -> MapHead:
        return self.receiver.head

    @property
    def complete(self) -> bool:
        """Every block verified (a page whose path a power cut forgot is still not :meth:`holds`)."""
        return self.receiver.complete

    @property
    def held(self) -> int:
        """Blocks claimed in the receiver's bitmap (verified)."""
        return self.receiver.bitmap.count

    def holds(self, block: int) -> bool:
        rec = self.receiver
        if block not in rec.bitmap:
            return False
        return block >= rec.head.page_count or rec.page_payload(block) is not None

    def held_of(self, blocks: set[int]) -> list[int]:
        rec = self.receiver
        pages = rec.head.page_count
        held = rec.bitmap.set_of(blocks)  # (a bit test per asked block: no list of every missing one)
        if held and held[0] < pages:  # a page whose path a power cut forgot is not held
            return [b for b in held if b >= pages or rec.page_payload(b) is not None]
        return held

    def payload(self, block: int) -> bytes:
        data = self.receiver.block_payload(block)
        if data is None:
            raise KeyError(block)
        return data
