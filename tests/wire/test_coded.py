"""CODED repair frames (SPEC.md §3.1): golden vectors for a C port, round trips, bad input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import wire
from wire.frames import CODED_MAX_BLOCKS, Coded, FrameError, decode, encode, xor_blocks

VECTORS = json.loads((Path(wire.__file__).resolve().parent / "vectors" / "coded.json").read_text())


def test_golden_frames_and_recovery() -> None:
    payloads = {int(k): bytes.fromhex(v) for k, v in VECTORS["block_payloads"].items()}
    lengths = {int(k): v for k, v in VECTORS["block_lengths"].items()}
    sid = bytes.fromhex(VECTORS["stream_id"])
    for case in VECTORS["frames"]:
        raw = bytes.fromhex(case["frame"])
        frame = decode(raw)
        assert isinstance(frame, Coded) and frame.stream_id == sid
        assert list(frame.blocks) == case["blocks"]
        assert (
            encode(Coded(sid, tuple(case["blocks"]), xor_blocks([payloads[b] for b in case["blocks"]])))
            == raw
        )
        got = xor_blocks([frame.payload, *[payloads[b] for b in case["holds"]]])[: lengths[case["recovers"]]]
        assert got.hex() == case["recovered"] == payloads[case["recovers"]].hex()


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["why"])
def test_golden_invalid_frames(case: dict[str, str]) -> None:
    with pytest.raises(FrameError):
        decode(bytes.fromhex(case["frame"]))


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    sid = bytes(8)
    for blocks in [(1,), (3, 3), tuple(range(CODED_MAX_BLOCKS + 1))]:
        with pytest.raises(FrameError):
            encode(Coded(sid, blocks, b"x"))


@given(
    st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=CODED_MAX_BLOCKS, unique=True),
    st.lists(st.binary(min_size=1, max_size=64), min_size=2, max_size=CODED_MAX_BLOCKS),
    st.data(),
)
def test_round_trip_and_any_one_block_recovers(
    blocks: list[int], payloads: list[bytes], data: st.DataObject
) -> None:
    n = min(len(blocks), len(payloads))
    blocks, payloads = blocks[:n], payloads[:n]
    raw = encode(Coded(b"\x11" * 8, tuple(blocks), xor_blocks(payloads)))
    frame = decode(raw)
    assert isinstance(frame, Coded) and list(frame.blocks) == blocks
    lost = data.draw(st.integers(0, n - 1))
    held = [p for i, p in enumerate(payloads) if i != lost]
    assert xor_blocks([frame.payload, *held])[: len(payloads[lost])] == payloads[lost]


@given(st.binary(max_size=80))
def test_decode_never_raises_anything_but_frame_error(tail: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(b"\x4f\x07" + bytes(8) + tail)
