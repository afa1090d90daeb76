"""Signed chunk maps: what lets a node check every chunk on arrival while trusting no root.

A chunk map describes one artifact cut into ``chunk_size`` pieces. Its *head* (byte layout in
SPEC.md §2) names the artifact (id, name, size, SHA-256), carries a Merkle root over the chunk
hashes and a monotonic ``sequence`` number, and is signed with the server's Ed25519 deployment
key. The leaf hashes travel in *pages*: page ``p`` holds the leaves of chunks
``[p*K, (p+1)*K)`` (``K`` = leaves per page, a power of two) plus the authentication path from
that page's subtree root up to the signed root, so each page is checked on its own, in any order.

Merkle tree (RFC 6962-style domain separation): ``leaf = SHA-256(0x00 || chunk)``,
``node = SHA-256(0x01 || left || right)``; the leaves are padded with 32 zero bytes up to
``K * next_pow2(page_count)``.

The vendor's Mender signature is not replaced: the node still verifies the whole artifact
(manifest.sig) before it marks the slot bootable. The map only makes per-chunk checks possible
and carries the anti-rollback sequence number the artifact format lacks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from wire.errors import WireError

__all__ = [
    "ALG_ED25519_SHA256",
    "EMPTY_LEAF",
    "HASH_LEN",
    "MAGIC",
    "MAX_CHUNK",
    "MAX_PAGES",
    "MIN_CHUNK",
    "SIG_LEN",
    "VERSION",
    "ChunkMap",
    "ChunkMapError",
    "MapHead",
    "build_chunk_map",
    "check_shape",
    "key_id_for",
    "leaf_hash",
    "leaves_per_page",
    "merkle_root",
    "page_path",
    "page_root_from_path",
]

MAGIC = b"MOCM"
VERSION = 1
ALG_ED25519_SHA256 = 1
HASH_LEN = 32
SIG_LEN = 64
EMPTY_LEAF = bytes(HASH_LEN)
_FIXED = struct.Struct(">4sBBHQIIHH32s32s8s")  # up to key_id, then id and name (u8-length each)
MIN_CHUNK = 64
MAX_CHUNK = 60000
MAX_PAGES = 0xFFFF  # page_count is a u16 in the head


class ChunkMapError(WireError):
    """A map (head, page or full form) that is malformed or does not verify."""


_last_leaf: tuple[bytes | None, bytes] = (None, b"")  # (chunk bytes object, its leaf hash)
_VERIFIED_MAX = 64
_verified: dict[tuple[bytes, bytes, bytes], None] = {}  # (raw key, signature, signed bytes): MapHead.verify


def leaf_hash(chunk: bytes) -> bytes:
    """SHA-256(0x00 ‖ chunk). The same ``bytes`` object hashed again (one broadcast chunk checked
    by many simulated receivers) returns the digest computed last time: bytes are immutable (the
    memo is one tuple swapped whole)."""
    global _last_leaf
    last_chunk, last_digest = _last_leaf
    if chunk is last_chunk:
        return last_digest
    digest = hashlib.sha256(b"\x00" + chunk).digest()
    if type(chunk) is bytes:
        _last_leaf = (chunk, digest)
    return digest


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def merkle_root(leaves: list[bytes]) -> bytes:
    """Root over ``leaves`` (length must be a power of two)."""
    level = list(leaves)
    while len(level) > 1:
        level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def leaves_per_page(chunk_size: int) -> int:
    """The largest power of two K with K * 32 <= chunk_size."""
    k = 1
    while k * 2 * HASH_LEN <= chunk_size:
        k *= 2
    return k


def _pages(artifact_size: int, chunk_size: int) -> int:
    chunks = -(-artifact_size // chunk_size)
    return -(-chunks // leaves_per_page(chunk_size))


def check_shape(artifact_size: int, chunk_size: int) -> tuple[int, int]:
    """(chunk_count, page_count) of a map over ``artifact_size`` bytes, or ChunkMapError when no
    map can have that shape: decided from the sizes alone, before any byte is read or hashed."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ChunkMapError(f"chunk size must be in {MIN_CHUNK}..{MAX_CHUNK}")
    if artifact_size <= 0:
        raise ChunkMapError("empty artifact")
    pages = _pages(artifact_size, chunk_size)
    if pages > MAX_PAGES:
        hint = ""
        if _pages(artifact_size, MAX_CHUNK) <= MAX_PAGES:  # pages only shrink as chunks grow
            low, high = chunk_size, MAX_CHUNK
            while low < high:
                mid = (low + high) // 2
                low, high = (low, mid) if _pages(artifact_size, mid) <= MAX_PAGES else (mid + 1, high)
            hint = f"; the smallest chunk size that fits is {low}"
        raise ChunkMapError(
            f"{artifact_size} bytes in chunks of {chunk_size} make {pages} pages, at most {MAX_PAGES}{hint}"
        )
    return -(-artifact_size // chunk_size), pages


def key_id_for(public_key: ed25519.Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8]


@dataclass(frozen=True, slots=True)
class MapHead:
    """The signed part of a chunk map (plus its signature)."""

    chunk_size: int
    sequence: int
    artifact_size: int
    chunk_count: int
    leaves_per_page: int
    page_count: int
    artifact_sha256: bytes
    merkle_root: bytes
    key_id: bytes
    artifact_id: str
    artifact_name: str
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        ident = self.artifact_id.encode()
        name = self.artifact_name.encode()
        if len(ident) > 255 or len(name) > 255:
            raise ChunkMapError("artifact id and name must be at most 255 bytes")
        return (
            _FIXED.pack(
                MAGIC,
                VERSION,
                ALG_ED25519_SHA256,
                self.chunk_size,
                self.sequence,
                self.artifact_size,
                self.chunk_count,
                self.leaves_per_page,
                self.page_count,
                self.artifact_sha256,
                self.merkle_root,
                self.key_id,
            )
            + bytes([len(ident)])
            + ident
            + bytes([len(name)])
            + name
        )

    def encode(self) -> bytes:
        if len(self.signature) != SIG_LEN:
            raise ChunkMapError("head is not signed")
        return self.signed_bytes() + self.signature

    @property
    def block_count(self) -> int:
        """Pages then chunks: the index space of DATA frames and NACK bitmaps."""
        return self.page_count + self.chunk_count

    @property
    def tree_depth(self) -> int:
        """Hashes in a page's authentication path."""
        return (_next_pow2(self.page_count)).bit_length() - 1

    def chunk_length(self, chunk: int) -> int:
        if chunk == self.chunk_count - 1:
            return self.artifact_size - chunk * self.chunk_size
        return self.chunk_size

    def page_leaf_count(self, page: int) -> int:
        return min(self.leaves_per_page, self.chunk_count - page * self.leaves_per_page)

    def stream_id(self) -> bytes:
        """8 bytes naming this map on the group link: a new root serving the same map resumes it."""
        return hashlib.sha256(self.encode()).digest()[:8]

    @classmethod
    def decode(cls, data: bytes) -> MapHead:
        if len(data) < _FIXED.size + 2 + SIG_LEN:
            raise ChunkMapError("chunk map head too short")
        (magic, version, alg, chunk_size, seq, size, count, k, pages, digest, root, key_id) = (
            _FIXED.unpack_from(data)
        )
        if magic != MAGIC or version != VERSION or alg != ALG_ED25519_SHA256:
            raise ChunkMapError("not a version-1 Ed25519 chunk map head")
        pos = _FIXED.size
        id_len = data[pos]
        ident = data[pos + 1 : pos + 1 + id_len]
        pos += 1 + id_len
        if pos >= len(data):
            raise ChunkMapError("chunk map head truncated")
        name_len = data[pos]
        name = data[pos + 1 : pos + 1 + name_len]
        pos += 1 + name_len
        if len(data) != pos + SIG_LEN or len(ident) != id_len or len(name) != name_len:
            raise ChunkMapError("chunk map head has a wrong length")
        try:
            head = cls(
                chunk_size,
                seq,
                size,
                count,
                k,
                pages,
                digest,
                root,
                key_id,
                ident.decode(),
                name.decode(),
                data[pos:],
            )
        except UnicodeDecodeError:
            raise ChunkMapError("artifact id or name is not UTF-8") from None
        head._check_shape()
        return head

    def _check_shape(self) -> None:
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise ChunkMapError(f"chunk size {self.chunk_size} out of range")
        if self.artifact_size < 1 or self.chunk_count != -(-self.artifact_size // self.chunk_size):
            raise ChunkMapError("chunk count does not match artifact size")
        if self.leaves_per_page != leaves_per_page(self.chunk_size):
            raise ChunkMapError("leaves per page does not match chunk size")
        if self.page_count != -(-self.chunk_count // self.leaves_per_page):
            raise ChunkMapError("page count does not match chunk count")

    def verify(self, public_key: ed25519.Ed25519PublicKey) -> None:
        """Raise ChunkMapError unless the server's key signed exactly these bytes.

        A head that verified is remembered by its exact bytes, signature and key (Ed25519
        verification is deterministic: the same three always give the same answer), so the
        nodes of one process (the simulator: thousands hear the same head) verify it once; the
        last ``_VERIFIED_MAX`` are kept; a failure is never remembered."""
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if self.key_id != hashlib.sha256(raw).digest()[:8]:  # key_id_for, with the raw key kept
            raise ChunkMapError("chunk map signed by an unknown key")
        signed = self.signed_bytes()
        memo = (raw, self.signature, signed)
        if memo in _verified:
            return
        try:
            public_key.verify(self.signature, signed)
        except InvalidSignature:
            raise ChunkMapError("chunk map signature does not verify") from None
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[memo] = None


def page_path(leaves: list[bytes], head: MapHead, page: int, roots: list[bytes] | None = None) -> list[bytes]:
    """Authentication path (bottom-up sibling hashes) of page ``page``'s subtree root
    (``roots``: the page subtree roots, if the caller already computed them)."""
    if roots is None:
        roots = _page_roots(leaves, head)
    path: list[bytes] = []
    index = page
    level = roots
    while len(level) > 1:
        path.append(level[index ^ 1])
        level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        index //= 2
    return path


def page_root_from_path(page_leaves: list[bytes], head: MapHead, page: int, path: list[bytes]) -> bytes:
    """The Merkle root implied by a page's leaves and its path (compare with ``head.merkle_root``)."""
    padded = page_leaves + [EMPTY_LEAF] * (head.leaves_per_page - len(page_leaves))
    node = merkle_root(padded)
    index = page
    for sibling in path:
        node = _node(sibling, node) if index & 1 else _node(node, sibling)
        index //= 2
    return node


def _page_roots(leaves: list[bytes], head: MapHead) -> list[bytes]:
    k = head.leaves_per_page
    pages = _next_pow2(head.page_count)
    padded = leaves + [EMPTY_LEAF] * (pages * k - len(leaves))
    return [merkle_root(padded[p * k : (p + 1) * k]) for p in range(pages)]


@dataclass(frozen=True, slots=True)
class ChunkMap:
    """Full form: the signed head and every leaf hash (what the server serves, SPEC.md §2.3)."""

    head: MapHead
    leaves: tuple[bytes, ...]

    def encode(self) -> bytes:
        head = self.head.encode()
        return struct.pack(">H", len(head)) + head + b"".join(self.leaves)

    @classmethod
    def decode(cls, data: bytes) -> ChunkMap:
        if len(data) < 2:
            raise ChunkMapError("chunk map too short")
        (head_len,) = struct.unpack_from(">H", data)
        head = MapHead.decode(data[2 : 2 + head_len])
        body = data[2 + head_len :]
        if len(body) != head.chunk_count * HASH_LEN:
            raise ChunkMapError("chunk map leaf table has a wrong length")
        leaves = tuple(body[i : i + HASH_LEN] for i in range(0, len(body), HASH_LEN))
        cmap = cls(head, leaves)
        if cmap.computed_root() != head.merkle_root:
            raise ChunkMapError("leaf table does not match the signed Merkle root")
        return cmap

    def computed_root(self) -> bytes:
        return merkle_root(_page_roots(list(self.leaves), self.head))

    def page_payload(self, page: int) -> bytes:
        """DATA payload of page block ``page``: its leaves then its authentication path."""
        k = self.head.leaves_per_page
        leaves = list(self.leaves[page * k : (page + 1) * k])
        return b"".join(leaves) + b"".join(page_path(list(self.leaves), self.head, page))

    def page_payloads(self) -> list[bytes]:
        """Every page's DATA payload (:meth:`page_payload`), the page roots computed once."""
        k = self.head.leaves_per_page
        leaves = list(self.leaves)
        roots = _page_roots(leaves, self.head)
        return [
            b"".join(leaves[p * k : (p + 1) * k]) + b"".join(page_path(leaves, self.head, p, roots))
            for p in range(self.head.page_count)
        ]


def build_chunk_map(
    artifact: bytes,
    *,
    artifact_id: str,
    artifact_name: str,
    chunk_size: int,
    sequence: int,
    key: ed25519.Ed25519PrivateKey,
) -> ChunkMap:
    """Cut ``artifact`` into chunks, hash them, and sign the head (server side)."""
    check_shape(len(artifact), chunk_size)
    leaves = [leaf_hash(artifact[i : i + chunk_size]) for i in range(0, len(artifact), chunk_size)]
    k = leaves_per_page(chunk_size)
    unsigned = MapHead(
        chunk_size=chunk_size,
        sequence=sequence,
        artifact_size=len(artifact),
        chunk_count=len(leaves),
        leaves_per_page=k,
        page_count=-(-len(leaves) // k),
        artifact_sha256=hashlib.sha256(artifact).digest(),
        merkle_root=EMPTY_LEAF,
        key_id=key_id_for(key.public_key()),
        artifact_id=artifact_id,
        artifact_name=artifact_name,
    )
    root = merkle_root(_page_roots(leaves, unsigned))
    unsigned = dataclasses.replace(unsigned, merkle_root=root)
    signed = dataclasses.replace(unsigned, signature=key.sign(unsigned.signed_bytes()))
    return ChunkMap(signed, tuple(leaves))
