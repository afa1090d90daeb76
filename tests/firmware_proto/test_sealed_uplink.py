"""Sans-I/O tests of the node ↔ root sealed-record hop and the envelope serial."""

from __future__ import annotations

import msgpack
import pytest

from firmware_proto.sealed_uplink import (
    BATCH_NOT_DELIVERED,
    RecordBatcher,
    SealedRecordSender,
    UplinkFrameError,
)
from firmware_proto.testing.flash import MemoryFlash
from wire.envelope import BulkError, EnvelopeError, RequestEnvelope
from wire.sealed import (
    TO_NODE,
    RecordOp,
    ReplayWindow,
    SealedRecordError,
    decode_request,
    derive_record_key,
    encode_reply,
    open_record,
    seal_record,
)

KEY_A = derive_record_key("node-a", b"\x01" * 16)
KEY_B = derive_record_key("node-b", b"\x02" * 16)


def _server_answer(record: bytes, window: ReplayWindow) -> bytes | int:
    """What the bridge does with one record (wire.sealed only)."""
    try:
        key, seq, plain = open_record([KEY_A, KEY_B], record)
    except SealedRecordError:
        return BulkError.UNOPENABLE
    if not window.check(seq):
        return BulkError.REPLAYED
    window.accept(seq)
    op, _arg, body = decode_request(plain)
    assert op == RecordOp.STATUS and isinstance(body, dict)
    return seal_record(key, seq, encode_reply(204, b""), direction=TO_NODE)


def test_batch_round_trip_tamper_and_replay() -> None:
    a, b = SealedRecordSender(KEY_A, MemoryFlash()), SealedRecordSender(KEY_B, MemoryFlash())
    batcher = RecordBatcher(window=1.0, max_records=10)
    seq_a, frame_a = a.seal(RecordOp.STATUS, "dep-1", {"status": "success"})
    seq_b, frame_b = b.seal(RecordOp.STATUS, "dep-1", {"status": "installing"})
    tampered = bytearray(frame_b)
    tampered[-1] ^= 1  # the root flips a bit of node-b's record
    batcher.receive(frame_a, "A", 0.0)
    batcher.receive(bytes(tampered), "B", 0.1)
    batcher.receive(b"\x53\x01\x00", "junk", 0.1)  # too short: dropped, never batched
    assert batcher.stats.dropped == 1
    assert batcher.next_timer() == 1.0 and batcher.actions() == []
    batcher.handle_timer(1.0)
    (send,) = batcher.actions()
    assert b"success" not in b"".join(send.records) and b"dep-1" not in b"".join(send.records)
    windows = {"a": ReplayWindow(), "b": ReplayWindow()}
    entries = [_server_answer(r, windows["a" if i == 0 else "b"]) for i, r in enumerate(send.records)]
    batcher.batch_answered(send.token, entries)
    out = dict(batcher.frames_to_send())
    answer_a = a.open_answer(out["A"])
    assert (answer_a.seq, answer_a.status) == (seq_a, 204)
    answer_b = b.open_answer(out["B"])
    assert (answer_b.seq, answer_b.status, answer_b.error) == (seq_b, None, BulkError.UNOPENABLE)
    # the root replays node-a's record in a later batch: the server refuses it
    batcher.receive(frame_a, "A", 2.0)
    batcher.handle_timer(3.0)
    (again,) = batcher.actions()
    assert _server_answer(again.records[0], windows["a"]) == BulkError.REPLAYED
    batcher.batch_failed(again.token)
    (lost,) = batcher.frames_to_send()
    assert a.open_answer(lost[1]).error == BATCH_NOT_DELIVERED
    # node-b cannot open node-a's reply, and garbage is a typed error
    with pytest.raises(UplinkFrameError):
        b.open_answer(out["A"])
    with pytest.raises(UplinkFrameError):
        a.open_answer(b"\x00\x01\x02")


def test_batches_close_when_full() -> None:
    sender = SealedRecordSender(KEY_A, MemoryFlash())
    batcher = RecordBatcher(window=60.0, max_records=100, max_bytes=200)
    for _ in range(6):
        batcher.receive(sender.seal(RecordOp.STATUS, "d", {"status": "success"})[1], "A", 0.0)
    sizes = [len(s.records) for s in batcher.actions()]
    assert sizes and all(n * 40 <= 200 for n in sizes) and sum(sizes) < 6  # the rest still open
    batcher.handle_timer(60.0)
    assert sum(sizes) + sum(len(s.records) for s in batcher.actions()) == 6


def test_sequence_numbers_never_reused_after_a_reboot() -> None:
    flash = MemoryFlash()
    first = SealedRecordSender(KEY_A, flash, reserve=4)
    used = [first.seal(RecordOp.STATUS, "d", {})[0] for _ in range(5)]
    rebooted = SealedRecordSender(KEY_A, flash, reserve=4)  # power cut: in-RAM counter lost
    after = rebooted.seal(RecordOp.STATUS, "d", {})[0]
    assert used == [0, 1, 2, 3, 4] and after == 8  # past the last reservation (4..7)


def test_envelope_serial() -> None:
    env = RequestEnvelope("3", "GET", serial=7)
    assert RequestEnvelope.decode(env.encode()).serial == 7
    assert RequestEnvelope("3", "GET").encode() != env.encode()  # same id, new request
    assert RequestEnvelope.decode(RequestEnvelope("3", "GET").encode()).serial is None

    for bad in (-1, "7", True, 1.5):
        with pytest.raises(EnvelopeError):
            RequestEnvelope.decode(msgpack.packb({"i": "3", "m": "GET", "n": bad}))
