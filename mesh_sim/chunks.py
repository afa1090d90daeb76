"""Interim signed chunk map and per-node chunk bitmap for the simulated group stream.

Stand-in until issue 7's ``firmware_proto`` group-update objects land; the simulator's stream
engine talks to these through :class:`NodeImage` only, so the swap is local. What it keeps from the
design: a map signed by the server's deployment key (Ed25519) holding the image size, the chunk
size, a truncated SHA-256 per chunk, the image digest and a monotonic sequence number; every chunk
is checked on arrival; a map with a sequence number not above the one the node expects is refused
(replay); the node installs only after every chunk checked and the image digest matched.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["HASH_LEN", "ChunkMap", "NodeImage", "split_image"]

HASH_LEN = 8  # truncated SHA-256 per chunk: 2^-64 forgery odds per try, the map is signed
_HEADER = struct.Struct(">4sIIIH32s")  # magic, seq, image size, chunk size, hash len, image digest


def split_image(image: bytes, chunk_size: int) -> list[bytes]:
    return [image[i : i + chunk_size] for i in range(0, len(image), chunk_size)]


def _chunk_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:HASH_LEN]


@dataclass(frozen=True, slots=True)
class ChunkMap:
    seq: int
    image_size: int
    chunk_size: int
    image_digest: bytes
    hashes: tuple[bytes, ...]
    signature: bytes

    @classmethod
    def build(cls, image: bytes, chunk_size: int, seq: int, key: Ed25519PrivateKey) -> ChunkMap:
        hashes = tuple(_chunk_hash(c) for c in split_image(image, chunk_size))
        digest = hashlib.sha256(image).digest()
        body = _HEADER.pack(b"MOTA", seq, len(image), chunk_size, HASH_LEN, digest) + b"".join(hashes)
        return cls(seq, len(image), chunk_size, digest, hashes, key.sign(body))

    def body(self) -> bytes:
        hdr = _HEADER.pack(b"MOTA", self.seq, self.image_size, self.chunk_size, HASH_LEN, self.image_digest)
        return hdr + b"".join(self.hashes)

    def encoded_size(self) -> int:
        return _HEADER.size + HASH_LEN * len(self.hashes) + 64

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, self.body())
        except InvalidSignature:
            return False
        return True

    @property
    def chunk_count(self) -> int:
        return len(self.hashes)


class NodeImage:
    """One node's view of the update: accepted map, chunk bitmap (kept in flash), verdicts."""

    __slots__ = ("bitmap", "chunk_map", "have", "installed_at", "min_seq", "rejected_chunks", "rejected_maps")

    def __init__(self, min_seq: int) -> None:
        self.min_seq = min_seq  # the node refuses any map with seq < this (learned from the server)
        self.chunk_map: ChunkMap | None = None
        self.bitmap = bytearray()
        self.have = 0
        self.rejected_chunks = 0
        self.rejected_maps = 0
        self.installed_at: float | None = None

    def offer_map(self, chunk_map: ChunkMap, public_key: Ed25519PublicKey, *, verified: bool = False) -> bool:
        """Accept ``chunk_map`` if signed and fresh; ``verified`` skips a signature already checked
        on this very object (the simulator checks each distinct map object once)."""
        if self.chunk_map is chunk_map:
            return True
        if chunk_map.seq < self.min_seq or not (verified or chunk_map.verify(public_key)):
            self.rejected_maps += 1
            return False
        if self.chunk_map is None or chunk_map.image_digest != self.chunk_map.image_digest:
            self.chunk_map = chunk_map
            self.bitmap = bytearray(chunk_map.chunk_count)
            self.have = 0
        return True

    def receive(self, index: int, data: bytes) -> bool:
        """Store chunk ``index`` if it checks against the map; True only for a new good chunk."""
        cm = self.chunk_map
        if cm is None or self.bitmap[index]:
            return False
        if _chunk_hash(data) != cm.hashes[index]:
            self.rejected_chunks += 1
            return False
        self.bitmap[index] = 1
        self.have += 1
        return True

    def missing(self) -> list[int]:
        if self.chunk_map is None:
            return []
        return [i for i, b in enumerate(self.bitmap) if not b]

    @property
    def complete(self) -> bool:
        return self.chunk_map is not None and self.have == self.chunk_map.chunk_count
