"""PART frames and PARTS NACKs (SPEC.md §3.2): golden vectors for a C port, round trips, bad input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import wire
from wire.frames import (
    NACK_PARTS,
    PARTS_ALL,
    PARTS_MAX,
    FrameError,
    Nack,
    Part,
    burst_head,
    decode,
    encode,
    encode_parts,
    nack_parts,
    part_bounds,
    parts_covers,
)

VECTORS = json.loads((Path(wire.__file__).resolve().parent / "vectors" / "parts.json").read_text())


def test_golden_parts_cut_and_rebuild_the_block() -> None:
    payload = bytes.fromhex(VECTORS["block_payload"])
    sid = bytes.fromhex(VECTORS["stream_id"])
    count = VECTORS["count"]
    rebuilt = bytearray(len(payload))
    for case in VECTORS["parts"]:
        raw = bytes.fromhex(case["frame"])
        frame = decode(raw)
        assert isinstance(frame, Part)
        assert (frame.tag, frame.block, frame.index, frame.count) == (
            sid[:2],
            VECTORS["block"],
            case["index"],
            count,
        )
        assert part_bounds(len(payload), count, case["index"]) == (case["start"], case["end"])
        assert frame.payload == payload[case["start"] : case["end"]]
        assert encode(frame) == raw
        rebuilt[case["start"] : case["end"]] = frame.payload
    assert bytes(rebuilt) == payload


def test_golden_parts_nacks() -> None:
    for case in VECTORS["nacks"]:
        raw = bytes.fromhex(case["frame"])
        frame = decode(raw)
        assert isinstance(frame, Nack) and frame.flags & NACK_PARTS
        assert (frame.round, frame.base) == (case["round"], case["base"])
        assert nack_parts(frame) == {int(k): v for k, v in case["asks"].items()}
        assert encode(frame) == raw


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["why"])
def test_golden_invalid_frames(case: dict[str, str]) -> None:
    with pytest.raises(FrameError):
        decode(bytes.fromhex(case["frame"]))


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    for index, count, payload in [(3, 3, b"x"), (0, 0, b"x"), (0, 17, b"x"), (0, 1, b"")]:
        with pytest.raises(FrameError):
            encode(Part(b"ab", 1, index, count, payload))
    with pytest.raises(FrameError):
        encode(Nack(bytes(8), 0, NACK_PARTS, 0, b"\x80", b"\x80", ()))  # a partial bit without its mask


@given(st.binary(min_size=1, max_size=400), st.integers(1, PARTS_MAX), st.integers(0, 2**32 - 1))
def test_parts_round_trip_and_cover_the_payload(payload: bytes, count: int, block: int) -> None:
    pieces = []
    for j in range(count):
        start, end = part_bounds(len(payload), count, j)
        if end == start:  # more parts than bytes: the last ones are empty (a root never sends them)
            assert start == len(payload)
            continue
        frame = decode(encode(Part(b"\x01\x02", block, j, count, payload[start:end])))
        assert isinstance(frame, Part) and (frame.block, frame.index, frame.count) == (block, j, count)
        pieces.append(frame.payload)
    assert b"".join(pieces) == payload


@st.composite
def parts_nacks(draw: st.DrawFn) -> Nack:
    n = draw(st.integers(1, 16))
    bitmap = draw(st.binary(min_size=n, max_size=n))
    partial = bytes(b & draw(st.integers(0, 255)) for b in bitmap)
    marks = bin(int.from_bytes(partial, "big")).count("1")
    masks = tuple(draw(st.lists(st.integers(1, 0xFFFF), min_size=marks, max_size=marks)))
    base = draw(st.integers(0, 2**31))
    return Nack(b"\x09" * 8, draw(st.integers(0, 0xFFFF)), NACK_PARTS, base, bitmap, partial, masks)


@given(parts_nacks())
def test_parts_nack_round_trip(nack: Nack) -> None:
    back = decode(encode(nack))
    assert back == nack
    asks = nack_parts(back)
    assert parts_covers(asks, asks)
    # asking for every listed block wholly covers it; one part fewer of each block does not
    assert parts_covers(dict.fromkeys(asks, PARTS_ALL), asks)
    if asks:
        assert not parts_covers({b: m & (m - 1) for b, m in asks.items()}, asks)


@given(st.binary(max_size=80))
def test_decode_never_raises_anything_but_frame_error(tail: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(b"\x4f\x08\x01\x02" + tail)
    with contextlib.suppress(FrameError):
        decode(b"\x4f\x05" + bytes(8) + b"\x00\x01\x04" + tail)


@given(
    st.binary(min_size=0, max_size=200),
    st.integers(1, PARTS_MAX),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 17), max_size=20),
)
def test_encode_parts_is_encode_of_each_part(
    payload: bytes, count: int, block: int, indexes: list[int]
) -> None:
    """The sender's one-call encoder gives encode(Part(...)) for each index, or refuses as it does."""
    tag = b"\x12\x34"
    try:
        want = []
        for j in indexes:
            start, end = part_bounds(len(payload), count, j)
            want.append(encode(Part(tag, block, j, count, payload[start:end])))
    except FrameError:
        with pytest.raises(FrameError):
            encode_parts(tag, block, count, indexes, payload)
        return
    assert encode_parts(tag, block, count, indexes, payload) == want


_PART_BYTES = st.one_of(
    st.builds(
        lambda block, pc, payload, tag: (
            bytes([0x4F, 8]) + tag + block.to_bytes(4, "big") + bytes([pc]) + payload
        ),
        st.sampled_from([0, 7]),
        st.integers(0, 255),
        st.binary(max_size=4),
        st.sampled_from([b"\x12\x34", b"\x12\x35"]),
    ),
    st.binary(max_size=14),
)


@given(st.lists(_PART_BYTES, max_size=6))
def test_burst_head_agrees_with_decode(frames: list[bytes]) -> None:
    """A burst is taken on its raw headers exactly when decode takes every frame as a PART of the
    tag and one block: the agent's fast path sees what frame-by-frame decoding would."""
    decoded: list[Part] | None = []
    for f in frames:
        try:
            frame = decode(f)
        except FrameError:
            decoded = None
            break
        if (
            not isinstance(frame, Part)
            or frame.tag != b"\x12\x34"
            or (decoded and frame.block != decoded[0].block)
        ):
            decoded = None
            break
        decoded.append(frame)
    head = burst_head(frames)
    if not decoded:
        assert head is None or head[2:4] != b"\x12\x34"
        return
    assert head == frames[0][:8] and int.from_bytes(head[4:8], "big") == decoded[0].block
    for i in range(len(frames)):  # what a driver that checked the burst may say of any subset
        assert burst_head(frames[i:]) == head and burst_head(frames[: i + 1]) == head
    assert [(f[8] >> 4, (f[8] & 15) + 1, f[9:]) for f in frames] == [
        (p.index, p.count, p.payload) for p in decoded
    ]
