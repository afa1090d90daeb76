"""MapHead.verify remembers a head that verified (its bytes, signature and key): the same head
heard by many nodes of one process is verified once; anything else is verified again, and a
failure is never remembered."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from wire import chunk_map
from wire.chunk_map import ChunkMapError, MapHead, build_chunk_map

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


class CountingKey:
    """The server's public key, counting the signature checks made with it."""

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self.key = key
        self.checks = 0

    def public_bytes(self, *a: object) -> bytes:
        return self.key.public_bytes(*a)  # type: ignore[arg-type]

    def verify(self, signature: bytes, data: bytes) -> None:
        self.checks += 1
        self.key.verify(signature, data)


def _head(seq: int = 7) -> MapHead:
    image = bytes(i & 0xFF for i in range(3000))
    return build_chunk_map(
        image, artifact_id="a-1", artifact_name="fw-2", chunk_size=256, sequence=seq, key=KEY
    ).head


def test_a_verified_head_is_checked_once_and_tampering_is_still_caught() -> None:
    chunk_map._verified.clear()
    key = CountingKey(KEY.public_key())
    head = _head()
    head.verify(key)  # type: ignore[arg-type]
    again = MapHead.decode(head.encode())  # the same bytes, another object (another node)
    again.verify(key)  # type: ignore[arg-type]
    assert key.checks == 1
    forged = dataclasses.replace(head, sequence=head.sequence + 1)  # the old signature, new bytes
    with pytest.raises(ChunkMapError, match="does not verify"):
        forged.verify(key)  # type: ignore[arg-type]
    with pytest.raises(ChunkMapError, match="does not verify"):
        forged.verify(key)  # type: ignore[arg-type]
    assert key.checks == 3  # a failure is checked every time
    bad_sig = dataclasses.replace(head, signature=bytes(64))
    with pytest.raises(ChunkMapError, match="does not verify"):
        bad_sig.verify(key)  # type: ignore[arg-type]


def test_another_key_is_not_taken_for_the_one_that_verified() -> None:
    chunk_map._verified.clear()
    head = _head()
    head.verify(KEY.public_key())
    other = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))).public_key()
    with pytest.raises(ChunkMapError, match="unknown key"):
        head.verify(other)


def test_the_memo_is_bounded() -> None:
    chunk_map._verified.clear()
    key = KEY.public_key()
    for seq in range(chunk_map._VERIFIED_MAX + 10):
        _head(seq + 1).verify(key)
    assert len(chunk_map._verified) <= chunk_map._VERIFIED_MAX
