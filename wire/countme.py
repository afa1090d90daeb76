"""Counting without tracking: weekly windows, age buckets, count buckets, small-cell suppression
and the count record a root seals for its children (shared by nodes, the server, the collector).

Windows are DNF/rpm-ostree countme's: week ``w`` starts at ``COUNTME_EPOCH + w * WEEK``, where the
epoch is Monday 1970-01-05 00:00 UTC. The age bucket of an installation (or a node) is read from
the first window it ever counted in, which is stored next to its data, never reset by an upgrade
(libdnf#1611 reset it): week number ``n = window - first + 1`` (1-based), bucket ``1`` for
``n = 1``, ``2`` for ``n`` in 2..4, ``3`` for 5..24, ``4`` from 25 on (libdnf's thresholds 2, 5, 25).

Count record (plaintext of a sealed record with op ``RecordOp.COUNT``; SPEC.md §6)::

    0x43 ('C') || version 1 (1) || window (u32 BE) || bucket (1: 1..4) || count (u32 BE)
      || len(firmware version) (1) || firmware version (UTF-8, 1..32)
      || len(device type) (1) || device type (UTF-8, 1..32)

Frames on the node ↔ root hop (one per datagram)::

    0x43 0x01 count-record(count = 1)     node → root   report: this node, this window
    0x43 0x02 window (u32 BE) code (1)    root → node   acknowledgement: 0 counted, 1 refused

Labels (versions, device types) are 1..32 characters of ``[0-9A-Za-z._+-]``: no free text, so a
report cannot carry an identifier in a field that looks harmless.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from wire.errors import WireError

__all__ = [
    "ACK",
    "ACK_COUNTED",
    "ACK_REFUSED",
    "COUNTME_EPOCH",
    "COUNT_MAGIC",
    "K_MIN",
    "REPORT",
    "WEEK",
    "CountRecord",
    "CountRecordError",
    "Suppressed",
    "ack_frame",
    "age_bucket",
    "check_label",
    "count_bucket",
    "decode_count_record",
    "encode_count_record",
    "parse_ack",
    "report_frame",
    "suppress",
    "window_of",
    "window_start",
]

COUNTME_EPOCH = 345_600  # Monday 1970-01-05 00:00:00 UTC
WEEK = 7 * 24 * 3600
K_MIN = 5  # cells below this are never published
COUNT_MAGIC = 0x43
_LABEL = re.compile(r"[0-9A-Za-z._+-]{1,32}")
_HEAD = struct.Struct(">BBIBI")
REPORT = 1  # frame type: a node's report
ACK = 2  # frame type: the root's acknowledgement
ACK_COUNTED = 0  # counted now, or already this window
ACK_REFUSED = 1  # not this window's report, or the root counts no more children
_ACK = struct.Struct(">BBIB")

_K = TypeVar("_K")


class CountRecordError(WireError):
    """Bytes that are not a valid count record (or a label outside the allowed alphabet)."""


def window_of(t: float) -> int:
    """The countme window containing UNIX time ``t`` (windows before the epoch are negative)."""
    return int((t - COUNTME_EPOCH) // WEEK)


def window_start(window: int) -> int:
    return COUNTME_EPOCH + window * WEEK


def age_bucket(first_window: int, window: int) -> int:
    n = window - first_window + 1
    return 1 + sum(1 for threshold in (2, 5, 25) if n >= threshold)


def count_bucket(n: int) -> str:
    """A count as a power-of-ten bucket: ``0``, ``1-9``, ``10-99``, ... ``10000+``."""
    if n <= 0:
        return "0"
    low = 1
    while low < 10_000 and n >= low * 10:
        low *= 10
    return "10000+" if low >= 10_000 else f"{low}-{low * 10 - 1}"


def check_label(value: object, what: str) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise CountRecordError(f"{what}: expected 1..32 of [0-9A-Za-z._+-], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class CountRecord:
    window: int
    bucket: int
    version: str
    device_type: str
    count: int


def encode_count_record(rec: CountRecord) -> bytes:
    version = check_label(rec.version, "version").encode()
    dtype = check_label(rec.device_type, "device type").encode()
    if not 1 <= rec.bucket <= 4 or not 0 <= rec.window < 1 << 32 or not 1 <= rec.count < 1 << 32:
        raise CountRecordError(f"count record out of range: {rec}")
    head = _HEAD.pack(COUNT_MAGIC, 1, rec.window, rec.bucket, rec.count)
    return head + bytes([len(version)]) + version + bytes([len(dtype)]) + dtype


def decode_count_record(data: bytes) -> CountRecord:
    if len(data) > _HEAD.size + 66 or len(data) < _HEAD.size + 4:
        raise CountRecordError(f"count record of {len(data)} bytes")
    magic, ver, window, bucket, count = _HEAD.unpack_from(data)
    if magic != COUNT_MAGIC or ver != 1:
        raise CountRecordError(f"not a version 1 count record (0x{magic:02x} {ver})")
    labels: list[str] = []
    at = _HEAD.size
    for what in ("version", "device type"):
        n = data[at] if at < len(data) else 0
        raw = data[at + 1 : at + 1 + n]
        if len(raw) != n:
            raise CountRecordError(f"count record: {what} truncated")
        try:
            labels.append(check_label(raw.decode(), what))
        except UnicodeDecodeError:
            raise CountRecordError(f"count record: {what} not UTF-8") from None
        at += 1 + n
    if at != len(data):
        raise CountRecordError("count record: trailing bytes")
    if not 1 <= bucket <= 4 or count == 0:
        raise CountRecordError(f"count record: bucket {bucket}, count {count}")
    return CountRecord(window, bucket, labels[0], labels[1], count)


def report_frame(rec: CountRecord) -> bytes:
    """A node's report to its root (count 1)."""
    if rec.count != 1:
        raise CountRecordError(f"a node reports itself only (count {rec.count})")
    return bytes((COUNT_MAGIC, REPORT)) + encode_count_record(rec)


def ack_frame(window: int, code: int) -> bytes:
    if code not in (ACK_COUNTED, ACK_REFUSED) or not 0 <= window < 1 << 32:
        raise CountRecordError(f"acknowledgement out of range: window {window}, code {code}")
    return _ACK.pack(COUNT_MAGIC, ACK, window, code)


def parse_ack(frame: bytes) -> tuple[int, int]:
    """(window, code) of the root's acknowledgement."""
    if len(frame) != _ACK.size or frame[0] != COUNT_MAGIC or frame[1] != ACK:
        raise CountRecordError(f"not a count acknowledgement ({len(frame)} bytes)")
    _, _, window, code = _ACK.unpack(frame)
    if code not in (ACK_COUNTED, ACK_REFUSED):
        raise CountRecordError(f"count acknowledgement code {code}")
    return window, code


@dataclass(frozen=True, slots=True)
class Suppressed(Generic[_K]):
    """What may be published of one table: cells at or above k, the rest as one ``other``."""

    shown: dict[_K, int]
    other: int  # the sum of the hidden cells: 0, or >= k
    total: int  # shown + other (0 when the whole table is below k)


def suppress(cells: Mapping[_K, int], k: int = K_MIN) -> Suppressed[_K]:
    """Small-cell suppression with complementary suppression.

    Cells below ``k`` are hidden; if what is hidden sums to 1..k-1 (so ``total - shown`` would
    give a small group away), the smallest shown cells are hidden too until the hidden sum is 0 or
    at least ``k``. A table whose total is below ``k`` publishes nothing. Ties are broken by the
    key's ``repr`` so the result depends on the counts only.
    """
    positive = {key: n for key, n in cells.items() if n > 0}
    total = sum(positive.values())
    if total < k:
        return Suppressed({}, 0, 0)
    shown = {key: n for key, n in positive.items() if n >= k}
    hidden = total - sum(shown.values())
    for key in sorted(shown, key=lambda c: (shown[c], repr(c))):
        if hidden == 0 or hidden >= k:
            break
        hidden += shown.pop(key)
    return Suppressed(shown, hidden, total)
