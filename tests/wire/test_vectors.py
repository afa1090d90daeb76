"""Golden vectors (wire/vectors/group_ota.json) for a C port: maps, pages, frames, records.

Everything is deterministic (Ed25519 signatures are), so the file is regenerated and compared
byte for byte. Regenerate after an intended format change with
``MESHOTA_WRITE_VECTORS=1 .venv/bin/python -m pytest tests/wire/test_vectors.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import wire
from firmware_proto import boot as bootmod
from firmware_proto.update_state import AgentState, Job
from wire.chunk_map import ChunkMap, ChunkMapError, MapHead, build_chunk_map, leaf_hash
from wire.frames import (
    END_COMPLETE,
    NACK_NEED_HEAD,
    Data,
    End,
    FrameError,
    Head,
    Nack,
    Poll,
    Want,
    decode,
    encode,
    missing_from_nack,
    nack_bitmap,
)

VECTORS = Path(wire.__file__).resolve().parent / "vectors" / "group_ota.json"
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def build_vectors() -> dict[str, Any]:
    artifact = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    cmap = build_chunk_map(
        artifact,
        artifact_id="0b7d6c6e-0000-4000-8000-000000000001",
        artifact_name="fw-1.2.0",
        chunk_size=64,
        sequence=42,
        key=KEY,
    )
    head = cmap.head
    sid = head.stream_id()
    base, bits = nack_bitmap([3, 4, 9, 21], 128)
    frames = {
        "want": Want(head.artifact_id, head.artifact_name, "http://127.0.0.1:8080/a?x=1", sid),
        "head": Head(sid, head.encode()),
        "data_page0": Data(sid, 0, cmap.page_payload(0)),
        "data_chunk0": Data(sid, head.page_count, artifact[:64]),
        "poll": Poll(sid, 3, 500),
        "nack": Nack(sid, 3, 0, base, bits),
        "nack_need_head": Nack(sid, 3, NACK_NEED_HEAD, 0, b""),
        "end": End(sid, END_COMPLETE),
    }
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    job = Job(AgentState.RECEIVING, 1, 1, "dep-1", head.artifact_id, head.artifact_name, "http://x/a")
    return {
        "server_public_key_raw": raw.hex(),
        "artifact": artifact.hex(),
        "chunk_size": 64,
        "leaf_hash_chunk0": leaf_hash(artifact[:64]).hex(),
        "map_head": head.encode().hex(),
        "map_head_fields": {
            "sequence": head.sequence,
            "artifact_size": head.artifact_size,
            "chunk_count": head.chunk_count,
            "leaves_per_page": head.leaves_per_page,
            "page_count": head.page_count,
            "tree_depth": head.tree_depth,
            "merkle_root": head.merkle_root.hex(),
            "artifact_sha256": hashlib.sha256(artifact).hexdigest(),
            "key_id": head.key_id.hex(),
        },
        "map_full": cmap.encode().hex(),
        "stream_id": sid.hex(),
        "pages": [cmap.page_payload(p).hex() for p in range(head.page_count)],
        "frames": {name: encode(f).hex() for name, f in frames.items()},
        "records": {
            "boot": bootmod.BootState(0, 1, False).encode().hex(),
            "slot1": bootmod.SlotInfo(len(artifact), hashlib.sha256(artifact).digest(), 42, "fw-1.2.0")
            .encode()
            .hex(),
            "agent": job.encode().hex(),
        },
    }


def test_vectors_match_the_file() -> None:
    vectors = build_vectors()
    if os.environ.get("MESHOTA_WRITE_VECTORS"):
        VECTORS.write_text(json.dumps(vectors, indent=1, sort_keys=True) + "\n")
    assert json.loads(VECTORS.read_text()) == vectors


def test_vectors_decode_and_verify() -> None:
    v = json.loads(VECTORS.read_text())
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["server_public_key_raw"]))
    head = MapHead.decode(bytes.fromhex(v["map_head"]))
    head.verify(public)
    cmap = ChunkMap.decode(bytes.fromhex(v["map_full"]))
    assert cmap.head == head and head.stream_id().hex() == v["stream_id"]
    for name, hexframe in v["frames"].items():
        assert encode(decode(bytes.fromhex(hexframe))).hex() == hexframe, name
    nack = decode(bytes.fromhex(v["frames"]["nack"]))
    assert isinstance(nack, Nack) and missing_from_nack(nack) == {3, 4, 9, 21}


def test_tampered_head_and_garbage_are_typed_errors() -> None:
    v = json.loads(VECTORS.read_text())
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["server_public_key_raw"]))
    raw = bytearray(bytes.fromhex(v["map_head"]))
    raw[8] ^= 1  # sequence
    with pytest.raises(ChunkMapError):
        MapHead.decode(bytes(raw)).verify(public)
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ChunkMapError):
        MapHead.decode(bytes.fromhex(v["map_head"])).verify(other)
    for junk in (b"", b"\x4f", b"\x4f\x09" + bytes(8), b"\x4f\x03" + bytes(9), b"\x4f\x04" + bytes(9)):
        with pytest.raises(FrameError):
            decode(junk)
    for junk in (b"", b"MOCM", bytes.fromhex(v["map_head"])[:-1]):
        with pytest.raises(ChunkMapError):
            MapHead.decode(junk)
    full = bytearray(bytes.fromhex(v["map_full"]))
    full[-1] ^= 1
    with pytest.raises(ChunkMapError):
        ChunkMap.decode(bytes(full))
