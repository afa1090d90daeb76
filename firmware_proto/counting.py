"""Counting nodes without tracking them (sans-I/O): a node's weekly count, its root's tally.

:class:`NodeCounter` (every node): once per countme window, at a random moment early in it, hand
the root one count frame — (age bucket, firmware version, device type), no identifier — and send it
again with a growing, jittered interval until the root acknowledges it or the window ends.

:class:`RootCounter` (a root): count each child once per window (whatever it resends), write the
tally to flash before acknowledging (so a reboot neither loses nor double counts a child) and,
once the window has ended, turn the tally into ONE count record per (window, age bucket, firmware
version, device type). Those records are what the root seals with its own record key
(``RecordOp.COUNT``) and sends on its bulk uplink; they stay in flash until the server answered,
so no per-node count message ever leaves the mesh. Frames on the node ↔ root hop (SPEC.md §6)::

    0x43 0x01 count-record(count = 1)     node → root   this node, this window
    0x43 0x02 window(u32) code(u8)        root → node   0 counted (now or before), 1 refused

Flash records: ``cnode`` (node: u32 first window, u32 last acknowledged window) and ``ctally``
(root: u32 window, u16 n, n × 8-byte child tags, u16 m, m × (u8 len ‖ count record) of the open
tally, u16 p, p × (u8 len ‖ count record) not yet delivered). A child tag is a hash of the child's
link address, kept only in the root's own flash and only for the open window.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, replace

from firmware_proto.flash_store import FlashStore
from firmware_proto.inventory_levels import NodeInventory
from wire.countme import (
    ACK_COUNTED,
    ACK_REFUSED,
    COUNT_MAGIC,
    REPORT,
    WEEK,
    CountRecord,
    CountRecordError,
    ack_frame,
    age_bucket,
    check_label,
    decode_count_record,
    encode_count_record,
    parse_ack,
    report_frame,
    window_of,
    window_start,
)

__all__ = [
    "NODE_RECORD",
    "ROOT_RECORD",
    "NodeCounter",
    "RootCounter",
    "RootCounterStats",
]

NODE_RECORD = "cnode"
ROOT_RECORD = "ctally"
_NONE = 0xFFFF_FFFF
_TAG_LEN = 8


class NodeCounter:
    """A node's weekly count: :meth:`handle_timer` at :meth:`next_timer`, :meth:`frames_to_send`
    to the root, :meth:`receive` the root's acknowledgement."""

    def __init__(
        self,
        flash: FlashStore,
        inventory: NodeInventory,
        rng: random.Random,
        *,
        spread: float = 6 * 3600.0,
        retry: float = 5.0,
        max_retry: float = 900.0,
    ) -> None:
        check_label(inventory.device_type, "device type")
        check_label(inventory.firmware_version, "firmware version")
        self.flash = flash
        self.inventory = inventory
        self.rng = rng
        self.spread = min(spread, WEEK / 2)
        self.retry = retry
        self.max_retry = max_retry
        self.sent = 0
        self.refused = 0
        raw = flash.read_record(NODE_RECORD)
        first, acked = struct.unpack(">II", raw) if raw is not None and len(raw) == 8 else (_NONE, _NONE)
        self.first_window: int | None = None if first == _NONE else first
        self.acked_window: int | None = None if acked == _NONE else acked
        self._window: int | None = None  # the window being reported
        self._due: float | None = None
        self._backoff = retry
        self._out: list[bytes] = []

    def set_version(self, version: str) -> None:
        """The running firmware changed (an update): later reports carry the new version."""
        self.inventory = replace(self.inventory, firmware_version=check_label(version, "firmware version"))

    def _save(self) -> None:
        first = _NONE if self.first_window is None else self.first_window
        acked = _NONE if self.acked_window is None else self.acked_window
        self.flash.write_record(NODE_RECORD, struct.pack(">II", first, acked))

    def _enter(self, window: int, now: float) -> None:
        self._window = window
        self._backoff = self.retry
        if self.acked_window == window:
            self._due = None
            return
        end = window_start(window + 1)
        due = window_start(window) + self.rng.uniform(0, self.spread)
        if due < now:  # booted (or first started) later in the window: soon, still at random
            due = now + self.rng.uniform(0, min(self.spread, max(0.0, end - now) / 2))
        self._due = due

    def next_timer(self) -> float | None:
        if self._window is None:
            return None
        end = float(window_start(self._window + 1))
        return end if self._due is None else min(self._due, end)

    def handle_timer(self, now: float) -> None:
        window = window_of(now)
        if window != self._window:
            self._enter(window, now)
        if self._due is None or now < self._due:
            return
        if self.first_window is None:
            self.first_window = window
            self._save()
        bucket = age_bucket(min(self.first_window, window), window)
        inv = self.inventory
        self._out.append(report_frame(CountRecord(window, bucket, inv.firmware_version, inv.device_type, 1)))
        self.sent += 1
        self._due = now + self._backoff * (1.0 + 0.5 * self.rng.random())
        self._backoff = min(self._backoff * 2, self.max_retry)

    def frames_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def receive(self, frame: bytes, now: float) -> None:
        """The root's acknowledgement (CountRecordError for other bytes)."""
        window, code = parse_ack(frame)
        if window != self._window or self._due is None:
            return  # for another window, or already acknowledged
        if code == ACK_REFUSED:
            self.refused += 1
        self.acked_window = window
        self._due = None
        self._save()

    @property
    def counted(self) -> bool:
        """True once the root acknowledged the current window."""
        return self._window is not None and self.acked_window == self._window


@dataclass(slots=True)
class RootCounterStats:
    reports: int = 0  # report frames received
    counted: int = 0  # children counted (each once per window)
    repeats: int = 0  # reports of a child already counted (acknowledged again, not counted)
    refused: int = 0  # another window, or the root full
    malformed: int = 0
    records: int = 0  # count records handed out for sealing


def _tag(sender: Hashable) -> bytes:
    return hashlib.blake2b(repr(sender).encode(), digest_size=_TAG_LEN, person=b"meshota-count").digest()


def _records_bytes(records: list[bytes]) -> bytes:
    return struct.pack(">H", len(records)) + b"".join(bytes([len(r)]) + r for r in records)


def _read_records(raw: bytes, at: int) -> tuple[list[bytes], int]:
    (n,) = struct.unpack_from(">H", raw, at)
    at += 2
    out = []
    for _ in range(n):
        size = raw[at]
        out.append(raw[at + 1 : at + 1 + size])
        at += 1 + size
    return out, at


class RootCounter:
    """A root's tally of its children, one window at a time (see the module docstring)."""

    def __init__(self, flash: FlashStore, *, max_children: int = 4096, commit_interval: float = 1.0) -> None:
        self.flash = flash
        self.max_children = max_children
        self.commit_interval = commit_interval
        self.stats = RootCounterStats()
        self._window: int | None = None
        self._seen: set[bytes] = set()
        self._cells: Counter[tuple[int, str, str]] = Counter()
        self._pending: list[bytes] = []
        self._dirty = False
        self._commit_at: float | None = None
        self._held: list[tuple[Hashable, bytes]] = []  # acknowledgements waiting for the flash write
        self._out: list[tuple[Hashable, bytes]] = []
        self._load()

    def _load(self) -> None:
        raw = self.flash.read_record(ROOT_RECORD)
        if raw is None:
            return
        try:
            window, n = struct.unpack_from(">IH", raw)
            at = 6
            seen = {raw[at + i * _TAG_LEN : at + (i + 1) * _TAG_LEN] for i in range(n)}
            at += n * _TAG_LEN
            cells, at = _read_records(raw, at)
            pending, at = _read_records(raw, at)
            tally = [decode_count_record(c) for c in cells]
            for p in pending:
                decode_count_record(p)
        except (struct.error, IndexError, CountRecordError):
            return  # a record this code did not write: start afresh rather than refuse to boot
        self._window = window
        self._seen = seen
        self._cells = Counter({(c.bucket, c.version, c.device_type): c.count for c in tally})
        self._pending = pending

    def _save(self) -> None:
        window = _NONE if self._window is None else self._window
        cells = [
            encode_count_record(CountRecord(window, *cell, n)) for cell, n in sorted(self._cells.items())
        ]
        raw = struct.pack(">IH", window, len(self._seen)) + b"".join(sorted(self._seen))
        self.flash.write_record(ROOT_RECORD, raw + _records_bytes(cells) + _records_bytes(self._pending))
        self._dirty = False

    def _ack(self, sender: Hashable, window: int, code: int, now: float, *, durable: bool) -> None:
        frame = ack_frame(window, code)
        if durable or not self._dirty:
            self._out.append((sender, frame))
            return
        self._held.append((sender, frame))
        if self._commit_at is None:
            self._commit_at = now + self.commit_interval

    def _commit(self) -> None:
        if self._dirty:
            self._save()
        self._out.extend(self._held)
        self._held = []
        self._commit_at = None

    def receive(self, frame: bytes, sender: Hashable, now: float) -> None:
        """A report frame from ``sender`` (a child's link address, or the root's own key)."""
        self.handle_timer(now)
        self.stats.reports += 1
        if len(frame) < 2 or frame[0] != COUNT_MAGIC or frame[1] != REPORT:
            self.stats.malformed += 1
            return
        try:
            rec = decode_count_record(frame[2:])
        except CountRecordError:
            self.stats.malformed += 1
            return
        current = window_of(now)
        # another window than now's, or the root's clock went back behind its open tally
        if rec.count != 1 or rec.window != current or self._window not in (None, current):
            self.stats.refused += 1
            self._ack(sender, rec.window, ACK_REFUSED, now, durable=True)
            return
        self._window = current  # nothing open was (first report ever, or after a closed window)
        tag = _tag(sender)
        if tag in self._seen:
            self.stats.repeats += 1
            self._ack(sender, current, ACK_COUNTED, now, durable=False)  # durable once the write is
            return
        if len(self._seen) >= self.max_children:
            self.stats.refused += 1
            self._ack(sender, current, ACK_REFUSED, now, durable=True)
            return
        self._seen.add(tag)
        self._cells[(rec.bucket, rec.version, rec.device_type)] += 1
        self.stats.counted += 1
        self._dirty = True
        self._ack(sender, current, ACK_COUNTED, now, durable=self.commit_interval <= 0)
        if self.commit_interval <= 0:
            self._commit()

    def next_timer(self) -> float | None:
        times = [t for t in (self._commit_at,) if t is not None]
        if self._window is not None and (self._cells or self._seen):
            times.append(float(window_start(self._window + 1)))
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        current = window_of(now)
        closing = self._window is not None and self._window < current
        if closing:
            assert self._window is not None
            closed = self._window
            for (bucket, version, dtype), n in sorted(self._cells.items()):
                self._pending.append(encode_count_record(CountRecord(closed, bucket, version, dtype, n)))
            self._window, self._seen, self._cells = None, set(), Counter()
        # the server takes this week's and last week's records only: older ones can never count
        keep = [p for p in self._pending if decode_count_record(p).window >= current - 1]
        if closing or len(keep) != len(self._pending):
            self._pending = keep
            self._dirty = True
            self._commit()
        elif self._commit_at is not None and now >= self._commit_at:
            self._commit()

    def frames_to_send(self) -> list[tuple[Hashable, bytes]]:
        out, self._out = self._out, []
        return out

    def pending(self) -> list[bytes]:
        """Count records to seal (``RecordOp.COUNT``) and deliver: one per (window, bucket,
        version, type), kept in flash until :meth:`delivered`."""
        return list(self._pending)

    def delivered(self, record: bytes) -> None:
        """The server answered ``record`` (counted, or refused for good): forget it."""
        if record in self._pending:
            self._pending.remove(record)
            self.stats.records += 1
            self._dirty = True
            self._commit()

    @property
    def window(self) -> int | None:
        return self._window

    def tally(self) -> dict[tuple[int, str, str], int]:
        """The open window's cells (bucket, version, type) -> children counted."""
        return dict(self._cells)
