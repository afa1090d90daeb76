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
    0x53 0x04 n {len(LEB128) record}×n  node → parent several sealed records (SPEC.md §5.1)

In a multi-hop mesh a relay packs what goes up (:class:`UplinkPacker`): records its children sent
(and its own) wait while its link to its parent is busy, and the next frame carries as many of them
as fit (``0x53 0x04``); answers come down hop by hop to the child that sent that key's record up.

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
    "MAX_PACKED",
    "MAX_RECORD",
    "PACKED",
    "REFUSED",
    "REPLY",
    "SEQ_RECORD",
    "UP",
    "UPLINK_PACE",
    "BatcherStats",
    "PackerStats",
    "RecordAnswer",
    "RecordBatcher",
    "SealedRecordSender",
    "SendBatch",
    "UplinkFrameError",
    "UplinkPacker",
    "packed_frame",
    "packed_frame_len",
    "record_frame",
    "unpack_records",
]

MAGIC = 0x53
UP = 1
REPLY = 2
REFUSED = 3
PACKED = 4
BATCH_NOT_DELIVERED = 0xFF
SEQ_RECORD = "sseq"
MAX_PACKED = 255  # records in one packed frame (its count is one byte)
MAX_RECORD = 1024  # bytes of one sealed record in a packed frame (they are small device-API calls)
# a relay's up frame leaves this long after its first record began to wait, with every waiting
# record that fits (status reports are not urgent; what arrives meanwhile rides along)
UPLINK_PACE = 0.05


class UplinkFrameError(WireError):
    """Bytes that are not an uplink frame (the peer's fault)."""


def record_frame(record: bytes) -> bytes:
    return bytes((MAGIC, UP)) + record


def packed_frame(records: list[bytes]) -> bytes:
    """``0x53 0x04`` n, then each record with its length (LEB128) in front (SPEC.md §5.1)."""
    if not 1 <= len(records) <= MAX_PACKED:
        raise ValueError(f"a packed frame holds 1..{MAX_PACKED} records")
    out = bytearray((MAGIC, PACKED, len(records)))
    for record in records:
        if not 1 <= len(record) <= MAX_RECORD:
            raise ValueError(f"a packed record is 1..{MAX_RECORD} bytes")
        out += encode_varint(len(record))
        out += record
    return bytes(out)


def packed_frame_len(lengths: list[int]) -> int:
    """len(packed_frame(records)) for records of these lengths, without building it."""
    return 3 + sum(len(encode_varint(n)) + n for n in lengths)


def unpack_records(frame: bytes) -> list[bytes]:
    """The sealed records in an up frame: ``0x53 0x01`` (one) or ``0x53 0x04`` (packed); a frame
    that is neither, or whose lengths do not add up exactly, raises :class:`UplinkFrameError`.
    Records are not opened here (a relay or root cannot): :func:`parse_header` checks each."""
    if len(frame) < 3 or frame[0] != MAGIC:
        raise UplinkFrameError("not an uplink frame")
    if frame[1] == UP:
        return [frame[2:]]
    if frame[1] != PACKED:
        raise UplinkFrameError(f"not an up frame (type {frame[1]})")
    count, pos, out = frame[2], 3, []
    if count == 0:
        raise UplinkFrameError("packed frame with no record")
    for _ in range(count):
        try:
            n, pos = decode_varint(frame, pos)
        except SealedRecordError as exc:
            raise UplinkFrameError(f"packed record length: {exc}") from None
        if not 1 <= n <= MAX_RECORD or pos + n > len(frame):
            raise UplinkFrameError("packed record length out of range")
        out.append(frame[pos : pos + n])
        pos += n
    if pos != len(frame):
        raise UplinkFrameError(f"{len(frame) - pos} bytes after the packed records")
    return out


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
        """One up frame from a child: one record (``0x53 0x01``) or several a relay packed
        (``0x53 0x04``); answers go back to ``sender``, the child it came from."""
        try:
            records = unpack_records(frame)
        except UplinkFrameError:
            self.stats.dropped += 1
            return
        self._note_cadence(sender, now)
        for record in records:
            self._add(record, sender, now)

    def _add(self, record: bytes, sender: Hashable, now: float) -> None:
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


@dataclass(slots=True)
class PackerStats:
    records: int = 0  # records queued to go up
    frames: int = 0  # frames taken to go up
    dropped: int = 0  # malformed frames or records (the sender's fault)
    overflow: int = 0  # records dropped because the queue was full (their senders send again)
    replies: int = 0  # answers routed down to a child
    unroutable: int = 0  # answers for a key no child sent up lately


class UplinkPacker:
    """A relay's uplink to its parent (SPEC.md §5.1, sans-I/O): up frames from its children and
    from its own sender go in with :meth:`put`; when its link to the parent is free the driver
    calls :meth:`take`, which packs the oldest queued records that fit ``room`` bytes into one
    frame. The relay reads no record (kid and sequence number are in clear, the rest is sealed).

    Bounded: at most ``max_records`` records and ``max_bytes`` bytes wait (a full queue drops
    its oldest record: its sender sends again when no answer comes); answers coming down go to
    the child that last sent that key's record up, remembered for ``max_routes`` keys (the
    longest silent forgotten first)."""

    def __init__(self, *, max_records: int = 64, max_bytes: int = 4096, max_routes: int = 4096) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_routes = max_routes
        self.stats = PackerStats()
        self._queue: list[bytes] = []
        self._bytes = 0
        self._routes: dict[bytes, Hashable] = {}  # kid -> child (insertion order: LRU)

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, frame: bytes, child: Hashable) -> int:
        """Queue the records of an up frame from ``child`` (the relay's own sender included);
        returns how many were queued (a malformed frame or record: none of it, counted)."""
        try:
            records = unpack_records(frame)
            kids = [parse_header(r)[0] for r in records]
        except (UplinkFrameError, SealedRecordError):
            self.stats.dropped += 1
            return 0
        if any(len(r) > MAX_RECORD for r in records):
            self.stats.dropped += 1
            return 0
        for record, kid in zip(records, kids, strict=True):
            self._routes.pop(kid, None)
            self._routes[kid] = child
            if len(self._routes) > self.max_routes:
                del self._routes[next(iter(self._routes))]
            self._queue.append(record)
            self._bytes += len(record)
            self.stats.records += 1
        while len(self._queue) > self.max_records or self._bytes > self.max_bytes:
            self._bytes -= len(self._queue.pop(0))
            self.stats.overflow += 1
        return len(records)

    def take(self, room: int) -> bytes | None:
        """The next frame for the parent: the oldest records that fit ``room`` bytes (one record
        alone goes as ``0x53 0x01``); None when nothing waits. A record that cannot fit even alone
        is dropped (counted)."""
        taken: list[bytes] = []
        size = 3  # the packed frame's length so far
        while self._queue and len(taken) < MAX_PACKED:
            record = self._queue[0]
            grown = size + len(encode_varint(len(record))) + len(record)
            if taken and grown > room:
                break
            self._queue.pop(0)
            self._bytes -= len(record)
            if not taken and 2 + len(record) > room:
                self.stats.dropped += 1  # too big for the link even alone
                continue
            taken.append(record)
            size = grown
        if not taken:
            return None
        self.stats.frames += 1
        return record_frame(taken[0]) if len(taken) == 1 else packed_frame(taken)

    def route_down(self, frame: bytes) -> Hashable | None:
        """The child an answer from the parent (``0x53 0x02`` sealed reply, ``0x53 0x03``
        refusal) goes to, by the key id in clear; None if no child sent that key's record up
        lately (counted; the answer is dropped and the sender asks again)."""
        if len(frame) >= 2 + KID_LEN and frame[0] == MAGIC and frame[1] == REPLY:
            kid = frame[2 : 2 + KID_LEN]
        elif len(frame) >= 3 + KID_LEN and frame[0] == MAGIC and frame[1] == REFUSED:
            kid = frame[3 : 3 + KID_LEN]
        else:
            self.stats.unroutable += 1
            return None
        child = self._routes.get(kid)
        if child is None:
            self.stats.unroutable += 1
            return None
        self.stats.replies += 1
        return child
