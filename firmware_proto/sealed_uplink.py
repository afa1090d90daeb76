"""Sealed records from nodes to their root and back (sans-I/O): the node's sender, the root's batcher.

A node seals a small device-API call (wire/sealed.py: deployment status, inventory,
next) with its own record key and hands it to its root on the mesh; the root packs what its
children sent within ``window`` seconds into one bulk request (``/mender/bulk/v1``) over its own
session and hands each entry of the bulk reply back to the node that sent the record. The root
sees kid, sequence number and length — never the content, and it cannot forge or replay a record
(the bridge checks the AEAD tag and the device's replay window).

Frames on the node ↔ root hop (SPEC.md §5), one per datagram::

    0x53 0x01 record                    node → root   one sealed record
    0x53 0x02 sealed reply              root → node   the bridge's sealed answer (kid, seq in clear)
    0x53 0x03 code kid(3) seq(LEB128)   root → node   no answer for that record: the bridge's error
                                                      code (BulkError) or 0xFF (batch not delivered)

Sequence numbers survive reboots: the sender reserves them in blocks (flash record ``sseq`` =
the first number not yet reserved, u64) and starts past the last reservation after a power cut,
so no number is ever used twice (at most ``reserve - 1`` are skipped).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from dataclasses import dataclass, field

from firmware_proto.flash_store import FlashStore
from wire.errors import WireError
from wire.sealed import (
    KID_LEN,
    TO_NODE,
    RecordKey,
    RecordOp,
    SealedRecordError,
    decode_reply,
    decode_varint,
    encode_request,
    encode_varint,
    open_record,
    parse_header,
    seal_record,
)

__all__ = [
    "BATCH_NOT_DELIVERED",
    "MAGIC",
    "REFUSED",
    "REPLY",
    "SEQ_RECORD",
    "UP",
    "BatcherStats",
    "RecordAnswer",
    "RecordBatcher",
    "SealedRecordSender",
    "SendBatch",
    "UplinkFrameError",
    "record_frame",
]

MAGIC = 0x53
UP = 1
REPLY = 2
REFUSED = 3
BATCH_NOT_DELIVERED = 0xFF
SEQ_RECORD = "sseq"


class UplinkFrameError(WireError):
    """Bytes that are not an uplink frame (the peer's fault)."""


def record_frame(record: bytes) -> bytes:
    return bytes((MAGIC, UP)) + record


def _refused_frame(code: int, record: bytes) -> bytes:
    kid, seq, _ = parse_header(record)
    return bytes((MAGIC, REFUSED, code)) + kid + encode_varint(seq)


@dataclass(frozen=True, slots=True)
class RecordAnswer:
    """What came back for the record with sequence number ``seq``: a status and body (opened
    sealed reply) or an error code (``status`` None)."""

    seq: int
    status: int | None
    body: bytes = b""
    error: int | None = None


class SealedRecordSender:
    """The node's side: seal calls with its record key, open what the root hands back."""

    def __init__(self, key: RecordKey, flash: FlashStore, *, reserve: int = 16) -> None:
        self.key = key
        self.flash = flash
        self.reserve = reserve
        raw = flash.read_record(SEQ_RECORD)
        self._next = struct.unpack(">Q", raw)[0] if raw is not None and len(raw) == 8 else 0
        self._limit = self._next

    def seal(self, op: RecordOp, arg: str, body: object) -> tuple[int, bytes]:
        """(sequence number, frame for the root)."""
        if self._next >= self._limit:
            self._limit = self._next + self.reserve
            self.flash.write_record(SEQ_RECORD, struct.pack(">Q", self._limit))  # before first use
        seq = self._next
        self._next += 1
        return seq, record_frame(seal_record(self.key, seq, encode_request(op, arg, body)))

    def open_answer(self, frame: bytes) -> RecordAnswer:
        if len(frame) < 3 or frame[0] != MAGIC:
            raise UplinkFrameError("not an uplink frame")
        if frame[1] == REPLY:
            try:
                _, seq, plain = open_record([self.key], frame[2:], direction=TO_NODE)
                status, body = decode_reply(plain)
            except SealedRecordError as exc:
                raise UplinkFrameError(f"sealed reply does not open: {exc}") from None
            return RecordAnswer(seq, status, body)
        if frame[1] == REFUSED and len(frame) >= 3 + KID_LEN + 1:
            if frame[3 : 3 + KID_LEN] != self.key.kid:
                raise UplinkFrameError("refusal for another key")
            try:
                seq, _ = decode_varint(frame, 3 + KID_LEN)
            except SealedRecordError as exc:
                raise UplinkFrameError(str(exc)) from None
            return RecordAnswer(seq, None, error=frame[2])
        raise UplinkFrameError(f"unexpected uplink frame type {frame[1]}")


@dataclass(frozen=True, slots=True)
class SendBatch:
    """Driver: publish these records as one bulk request; answer with batch_answered/failed(token)."""

    token: int
    records: tuple[bytes, ...]


@dataclass(slots=True)
class _Batch:
    records: list[bytes] = field(default_factory=list)
    senders: list[Hashable] = field(default_factory=list)
    size: int = 0
    opened_at: float = 0.0


@dataclass(slots=True)
class BatcherStats:
    records: int = 0
    batches: int = 0
    record_bytes: int = 0
    dropped: int = 0


class RecordBatcher:
    """The root's side: collect sealed records for ``window`` s (or until a batch is full), then
    ask the driver to send them as one bulk request; route the answers back per sender."""

    def __init__(
        self, *, window: float = 1.0, max_records: int = 32, max_bytes: int = 900, max_children: int = 4096
    ) -> None:
        self.window = window
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_children = max_children
        self.stats = BatcherStats()
        self._open = _Batch()
        # children's check-in cadence, seen from when their records arrive (the root cannot read
        # them): a batch never holds a child's record longer than half that child's interval,
        # the shortest wait its own 0.5-1.5x jitter could have chosen (issue 16)
        self._last_seen: dict[Hashable, float] = {}
        self._cadence: dict[Hashable, float] = {}
        self._deadline: float | None = None
        self._inflight: dict[int, _Batch] = {}
        self._token = 0
        self._actions: list[SendBatch] = []
        self._out: list[tuple[Hashable, bytes]] = []

    def receive(self, frame: bytes, sender: Hashable, now: float) -> None:
        if len(frame) < 2 or frame[0] != MAGIC or frame[1] != UP:
            self.stats.dropped += 1
            return
        record = frame[2:]
        try:
            parse_header(record)  # kid and seq are in clear; the rest the root cannot read
        except SealedRecordError:
            self.stats.dropped += 1
            return
        if self._open.records and self._open.size + len(record) + 3 > self.max_bytes:
            self._close()
        if not self._open.records:
            self._open.opened_at = now
            self._deadline = now + self.window
        self._note_cadence(sender, now)
        cadence = self._cadence.get(sender)
        if cadence is not None and self._deadline is not None:
            self._deadline = min(self._deadline, now + cadence / 2)
        self._open.records.append(record)
        self._open.senders.append(sender)
        self._open.size += len(record) + 3
        self.stats.records += 1
        self.stats.record_bytes += len(record)
        if len(self._open.records) >= self.max_records:
            self._close()

    def _note_cadence(self, sender: Hashable, now: float) -> None:
        last = self._last_seen.pop(sender, None)  # re-inserted last: the dict stays in LRU order
        if last is not None and now > last:
            self._cadence[sender] = now - last
        self._last_seen[sender] = now
        while len(self._last_seen) > self.max_children:  # bounded: forget the longest silent
            old = next(iter(self._last_seen))
            del self._last_seen[old]
            self._cadence.pop(old, None)

    def _close(self) -> None:
        self._deadline = None
        batch, self._open = self._open, _Batch()
        if not batch.records:
            return
        self._token += 1
        self._inflight[self._token] = batch
        self.stats.batches += 1
        self._actions.append(SendBatch(self._token, tuple(batch.records)))

    def next_timer(self) -> float | None:
        return self._deadline if self._open.records else None

    def handle_timer(self, now: float) -> None:
        if self._open.records and self._deadline is not None and now >= self._deadline:
            self._close()

    def actions(self) -> list[SendBatch]:
        out, self._actions = self._actions, []
        return out

    def frames_to_send(self) -> list[tuple[Hashable, bytes]]:
        out, self._out = self._out, []
        return out

    def batch_answered(self, token: int, entries: list[bytes | int]) -> None:
        batch = self._inflight.pop(token, None)
        if batch is None:
            return
        for i, (record, sender) in enumerate(zip(batch.records, batch.senders, strict=True)):
            entry = entries[i] if i < len(entries) else BATCH_NOT_DELIVERED
            if isinstance(entry, bytes):
                self._out.append((sender, bytes((MAGIC, REPLY)) + entry))
            else:
                self._out.append((sender, _refused_frame(int(entry) & 0xFF, record)))

    def batch_failed(self, token: int) -> None:
        self.batch_answered(token, [])
