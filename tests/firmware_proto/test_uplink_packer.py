"""Packed up frames (SPEC.md §5.1): a relay packs the sealed records queued for its parent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_proto.sealed_uplink import (
    MAX_PACKED,
    MAX_RECORD,
    PACKED,
    UP,
    RecordBatcher,
    SealedRecordSender,
    UplinkFrameError,
    UplinkPacker,
    packed_frame,
    packed_frame_len,
    record_frame,
    unpack_records,
)
from firmware_proto.testing.flash import MemoryFlash
from wire.sealed import TO_NODE, RecordOp, derive_record_key, encode_reply, open_record, seal_record

KEYS = [derive_record_key(f"node-{i}", bytes([i + 1]) * 16) for i in range(6)]

records_st = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=40)


@given(records_st)
def test_packed_frame_round_trip(records: list[bytes]) -> None:
    frame = packed_frame(records)
    assert frame[:3] == bytes((0x53, PACKED, len(records)))
    assert len(frame) == packed_frame_len([len(r) for r in records])
    assert unpack_records(frame) == records


@given(st.binary(max_size=400))
def test_unpack_arbitrary_bytes_is_records_or_a_typed_error(data: bytes) -> None:
    try:
        records = unpack_records(data)
    except UplinkFrameError:
        return
    assert data[:2] in (bytes((0x53, UP)), bytes((0x53, PACKED)))
    assert records and sum(map(len, records)) <= len(data) - 2
    if data[1] == PACKED:
        assert all(1 <= len(r) <= MAX_RECORD for r in records) and len(records) == data[2]


def test_unpack_refuses_what_does_not_add_up() -> None:
    good = packed_frame([b"abc", b"de"])
    for bad in (
        good + b"x",  # trailing byte
        good[:-1],  # truncated record
        bytes((0x53, PACKED, 0)),  # no record
        bytes((0x53, PACKED, 1, 0)),  # an empty record
        bytes((0x53, PACKED, 1)) + b"\x81\x08" + b"x" * 1025,  # a record over MAX_RECORD
        bytes((0x53, 0x02, 1, 2, 3)),  # a reply is no up frame
        b"\x00\x04\x01\x01x",
    ):
        with pytest.raises(UplinkFrameError):
            unpack_records(bad)
    with pytest.raises(ValueError):
        packed_frame([])
    with pytest.raises(ValueError):
        packed_frame([b"x"] * (MAX_PACKED + 1))


def _sealed(i: int, status: str = "downloading") -> tuple[SealedRecordSender, bytes]:
    sender = SealedRecordSender(KEYS[i], MemoryFlash())
    return sender, sender.seal(RecordOp.STATUS, "dep-1", {"status": status})[1]


def test_relays_pack_and_answers_find_their_way_back() -> None:
    """Two hops: nodes 0-2 under relay R (R's own record too), R under root; the root's batcher
    takes R's packed frame, and each answer goes down to R, then by key to the node that sent it."""
    senders, frames = zip(*(_sealed(i) for i in range(4)), strict=True)
    relay = UplinkPacker()
    for i in range(3):
        assert relay.put(frames[i], f"n{i}") == 1
    assert relay.put(frames[3], "self") == 1  # the relay's own record
    up = relay.take(room=1000)
    assert up is not None and up[1] == PACKED and len(relay) == 0 and relay.take(1000) is None
    assert unpack_records(up) == [f[2:] for f in frames]
    root = RecordBatcher(window=1.0)
    root.receive(up, "R", 0.0)
    root.handle_timer(1.0)
    (batch,) = root.actions()
    assert list(batch.records) == [f[2:] for f in frames]
    answers: list[bytes | int] = []
    for rec in batch.records:
        key = next(k for k in KEYS if k.kid == rec[:3])
        _, seq, _ = open_record([key], rec)
        answers.append(seal_record(key, seq, encode_reply(204, b""), direction=TO_NODE))
    answers[1] = 2  # the bridge refused node 1's record (replayed)
    root.batch_answered(batch.token, answers)
    down = root.frames_to_send()
    assert [to for to, _ in down] == ["R"] * 4
    for i, (_, frame) in enumerate(down):
        assert relay.route_down(frame) == ("self" if i == 3 else f"n{i}")
        answer = senders[i].open_answer(frame)
        assert (answer.status, answer.error) == ((None, 2) if i == 1 else (204, None))
    assert relay.stats.replies == 4
    assert relay.route_down(b"\x53\x02" + b"\xee\xee\xee" + b"\x00" * 9) is None  # a key never seen
    assert relay.route_down(b"\x53\x01xyz") is None and relay.stats.unroutable == 2


def test_take_respects_room_and_order() -> None:
    frames = [_sealed(i % 6, "s" * (i + 1))[1] for i in range(12)]
    relay = UplinkPacker()
    for i, f in enumerate(frames):
        relay.put(f, i)
    out: list[bytes] = []
    room = 150
    while (frame := relay.take(room)) is not None:
        assert len(frame) <= room
        out += unpack_records(frame)
    assert out == [f[2:] for f in frames]
    # one record alone goes as 0x53 0x01, exactly the frame its sender made
    relay.put(frames[0], 0)
    assert relay.take(room) == frames[0]
    # a record that cannot fit even alone is dropped, counted, and the next one goes
    relay.put(frames[11], 1)
    relay.put(frames[0], 0)
    assert relay.take(len(frames[0])) == frames[0] and relay.stats.dropped == 1


def test_caps_and_malformed_input() -> None:
    relay = UplinkPacker(max_records=3, max_bytes=10_000, max_routes=2)
    frames = [_sealed(i)[1] for i in range(5)]
    for i, f in enumerate(frames):
        relay.put(f, i)
    assert len(relay) == 3 and relay.stats.overflow == 2  # the oldest went
    assert unpack_records(relay.take(10_000) or b"") == [f[2:] for f in frames[2:]]
    # routes: only the two keys seen last are remembered
    reply = bytes((0x53, 0x02)) + KEYS[0].kid + b"\x00" * 9
    assert relay.route_down(reply) is None
    assert relay.route_down(bytes((0x53, 0x02)) + KEYS[4].kid + b"\x00" * 9) == 4
    small = UplinkPacker(max_bytes=len(frames[0]) + 10)  # room for one record
    small.put(frames[0], 0)
    small.put(frames[1], 1)
    assert len(small) == 1 and small.stats.overflow == 1
    for junk in (b"", b"\x53\x01", b"\x53\x01" + b"\x01\x02\x03", packed_frame([b"ab"]), b"\x53\x09xyz"):
        assert relay.put(junk, "x") == 0
    assert relay.stats.dropped == 5 and len(relay) == 0
    assert relay.put(record_frame(KEYS[0].kid + b"\x01" + b"x" * (MAX_RECORD + 1)), "big") == 0


@settings(max_examples=60)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.integers(0, 5), st.integers(1, 40)),
            st.tuples(st.just("take"), st.integers(20, 400), st.just(0)),
        ),
        max_size=60,
    )
)
def test_every_record_goes_up_once_in_order_or_is_counted(ops: list[tuple[str, int, int]]) -> None:
    relay = UplinkPacker(max_records=8, max_bytes=400)
    senders = [SealedRecordSender(k, MemoryFlash()) for k in KEYS]
    put: list[bytes] = []
    went: list[bytes] = []
    for op, a, b in ops:
        if op == "put":
            _, frame = senders[a].seal(RecordOp.STATUS, "d", {"status": "x" * b})
            assert relay.put(frame, a) == 1
            put.append(frame[2:])
        else:
            up = relay.take(a)
            if up is not None:
                assert len(up) <= a
                went += unpack_records(up)
    while (up := relay.take(10_000)) is not None:
        went += unpack_records(up)
    # what went up is what was put, in order, less the records counted as lost
    it = iter(put)
    assert all(any(r == p for p in it) for r in went)
    assert len(went) + relay.stats.overflow + relay.stats.dropped == len(put)
