"""Group-link frames: the wire codec between a root and the nodes it streams an image to.

Every frame starts ``0x4F ('O') type``; multi-byte integers are big-endian. Byte layouts are in
SPEC.md §3. ``decode`` raises :class:`FrameError` (and nothing else) on bytes that are not a frame.

``stream_id`` (8 bytes) is :meth:`MapHead.stream_id` of the signed chunk map being streamed, so a
new root serving the same map continues the same stream and nodes keep their bitmaps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wire.errors import WireError

__all__ = [
    "CODED_MAX_BLOCKS",
    "END_COMPLETE",
    "END_GAVE_UP",
    "FRAME_MAGIC",
    "NACK_DONE",
    "NACK_NEED_HEAD",
    "NO_STREAM",
    "Coded",
    "Data",
    "End",
    "Frame",
    "FrameError",
    "Head",
    "Nack",
    "Poll",
    "Want",
    "decode",
    "encode",
    "missing_from_nack",
    "nack_bitmap",
    "nack_covers",
    "xor_blocks",
]

FRAME_MAGIC = 0x4F
T_WANT, T_HEAD, T_DATA, T_POLL, T_NACK, T_END, T_CODED = 1, 2, 3, 4, 5, 6, 7
CODED_MAX_BLOCKS = 8
NACK_NEED_HEAD = 0x01
NACK_DONE = 0x02
END_COMPLETE = 1
END_GAVE_UP = 2
NO_STREAM = bytes(8)


class FrameError(WireError):
    """Bytes that are not a valid group-link frame."""


@dataclass(frozen=True, slots=True)
class Want:
    """Node → root: I want this artifact (learned from my own end-to-end ``next``)."""

    artifact_id: str
    artifact_name: str
    source_uri: str
    stream_id: bytes = NO_STREAM  # the stream whose bitmap I already hold, if any


@dataclass(frozen=True, slots=True)
class Head:
    """Root → group: the signed chunk map head being streamed."""

    stream_id: bytes
    head: bytes


@dataclass(frozen=True, slots=True)
class Data:
    """Root → group: block ``block`` (pages first, then chunks)."""

    stream_id: bytes
    block: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Poll:
    """Root → group: send your missing-block bitmaps for ``round`` within ``reply_window_ms``."""

    stream_id: bytes
    round: int
    reply_window_ms: int


@dataclass(frozen=True, slots=True)
class Nack:
    """Node → group (broadcast, so others can suppress theirs): blocks I miss."""

    stream_id: bytes
    round: int
    flags: int
    base: int
    bitmap: bytes  # bit i (MSB first in each byte) set = block base + i missing


@dataclass(frozen=True, slots=True)
class End:
    stream_id: bytes
    reason: int


@dataclass(frozen=True, slots=True)
class Coded:
    """Repair: the XOR of the payloads of 2..8 distinct blocks (SPEC.md §3.1); a node that holds
    all but one of them recovers that one."""

    stream_id: bytes
    blocks: tuple[int, ...]
    payload: bytes


Frame = Want | Head | Data | Poll | Nack | End | Coded


def xor_blocks(payloads: list[bytes]) -> bytes:
    """XOR of ``payloads``, each zero-padded to the longest (SPEC.md §3.1)."""
    size = max(len(p) for p in payloads)
    acc = int.from_bytes(payloads[0].ljust(size, b"\0"), "big")
    for p in payloads[1:]:
        acc ^= int.from_bytes(p.ljust(size, b"\0"), "big")
    return acc.to_bytes(size, "big")


def _str8(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise FrameError("string longer than 255 bytes")
    return bytes([len(raw)]) + raw


def _sid(stream_id: bytes) -> bytes:
    if len(stream_id) != 8:
        raise FrameError("stream id must be 8 bytes")
    return stream_id


def encode(frame: Frame) -> bytes:
    if isinstance(frame, Want):
        uri = frame.source_uri.encode()
        if len(uri) > 0xFFFF:
            raise FrameError("source uri too long")
        return (
            bytes([FRAME_MAGIC, T_WANT])
            + _sid(frame.stream_id)
            + _str8(frame.artifact_id)
            + _str8(frame.artifact_name)
            + struct.pack(">H", len(uri))
            + uri
        )
    if isinstance(frame, Head):
        return bytes([FRAME_MAGIC, T_HEAD]) + _sid(frame.stream_id) + frame.head
    if isinstance(frame, Data):
        return (
            bytes([FRAME_MAGIC, T_DATA])
            + _sid(frame.stream_id)
            + struct.pack(">I", frame.block)
            + frame.payload
        )
    if isinstance(frame, Poll):
        return (
            bytes([FRAME_MAGIC, T_POLL])
            + _sid(frame.stream_id)
            + struct.pack(">HH", frame.round, frame.reply_window_ms)
        )
    if isinstance(frame, Nack):
        return (
            bytes([FRAME_MAGIC, T_NACK])
            + _sid(frame.stream_id)
            + struct.pack(">HBI", frame.round, frame.flags, frame.base)
            + frame.bitmap
        )
    if isinstance(frame, Coded):
        _check_coded(frame.blocks)
        return (
            bytes([FRAME_MAGIC, T_CODED])
            + _sid(frame.stream_id)
            + bytes([len(frame.blocks)])
            + b"".join(struct.pack(">I", b) for b in frame.blocks)
            + frame.payload
        )
    return bytes([FRAME_MAGIC, T_END]) + _sid(frame.stream_id) + bytes([frame.reason])


def _check_coded(blocks: tuple[int, ...]) -> None:
    if not 2 <= len(blocks) <= CODED_MAX_BLOCKS:
        raise FrameError(f"CODED combines 2..{CODED_MAX_BLOCKS} blocks")
    if len(set(blocks)) != len(blocks):
        raise FrameError("CODED block indexes repeat")


_last_decoded: tuple[bytes | None, Frame | None] = (None, None)  # (bytes object, its frame): see decode


def decode(data: bytes) -> Frame:
    """The frame in ``data`` (:class:`FrameError` if it is none).

    Frames are immutable: the same ``bytes`` object decoded again (one broadcast handed to many
    receivers, as the simulator does) returns the frame decoded last time, without parsing. The
    memo is one tuple swapped whole, so a reader never pairs one frame's bytes with another's."""
    global _last_decoded
    last_data, last_frame = _last_decoded
    if data is last_data and last_frame is not None:
        return last_frame
    frame = _decode(data)
    if type(data) is bytes:
        _last_decoded = (data, frame)
    return frame


def _decode(data: bytes) -> Frame:
    if len(data) < 10 or data[0] != FRAME_MAGIC:
        raise FrameError("not a group-link frame")
    kind, sid, body = data[1], data[2:10], data[10:]
    try:
        if kind == T_WANT:
            pos = 0
            strings: list[str] = []
            for _ in range(2):
                n = body[pos]
                raw = body[pos + 1 : pos + 1 + n]
                if len(raw) != n:
                    raise FrameError("WANT truncated")
                strings.append(raw.decode())
                pos += 1 + n
            (ulen,) = struct.unpack_from(">H", body, pos)
            uri = body[pos + 2 :]
            if len(uri) != ulen:
                raise FrameError("WANT uri length mismatch")
            return Want(strings[0], strings[1], uri.decode(), sid)
        if kind == T_HEAD:
            if not body:
                raise FrameError("HEAD without a head")
            return Head(sid, body)
        if kind == T_DATA:
            (block,) = struct.unpack_from(">I", body)
            return Data(sid, block, body[4:])
        if kind == T_POLL:
            if len(body) != 4:
                raise FrameError("POLL has a wrong length")
            rnd, window = struct.unpack(">HH", body)
            return Poll(sid, rnd, window)
        if kind == T_NACK:
            rnd, flags, base = struct.unpack_from(">HBI", body)
            return Nack(sid, rnd, flags, base, body[7:])
        if kind == T_END:
            if len(body) != 1:
                raise FrameError("END has a wrong length")
            return End(sid, body[0])
        if kind == T_CODED:
            count = body[0]
            blocks = struct.unpack_from(f">{count}I", body, 1)
            _check_coded(blocks)
            payload = body[1 + 4 * count :]
            if not payload:
                raise FrameError("CODED without a payload")
            return Coded(sid, blocks, payload)
    except (struct.error, IndexError):
        raise FrameError(f"frame type {kind} truncated") from None
    except UnicodeDecodeError:
        raise FrameError("string is not UTF-8") from None
    raise FrameError(f"unknown frame type {kind}")


def nack_bitmap(missing: list[int], max_bytes: int) -> tuple[int, bytes]:
    """(base, bitmap) covering the sorted ``missing`` blocks from the first, at most ``max_bytes``."""
    if not missing:
        return 0, b""
    base = missing[0]
    span = min(missing[-1] - base + 1, max_bytes * 8)
    bits = bytearray((span + 7) // 8)
    for block in missing:
        offset = block - base
        if offset >= span:
            break
        bits[offset >> 3] |= 0x80 >> (offset & 7)
    return base, bytes(bits)


_SET_BITS = [tuple(b for b in range(8) if v & (0x80 >> b)) for v in range(256)]


def nack_covers(other: Nack, mine: Nack) -> bool:
    """Every block ``mine``'s bitmap lists, ``other``'s lists too (bitmaps compared as integers,
    MSB first, both shifted so that the same bit is the same block)."""
    end_o = other.base + 8 * len(other.bitmap)
    end_m = mine.base + 8 * len(mine.bitmap)
    hi = max(end_o, end_m)
    vo = int.from_bytes(other.bitmap, "big") << (hi - end_o)
    vm = int.from_bytes(mine.bitmap, "big") << (hi - end_m)
    return not vm & ~vo


def missing_from_nack(nack: Nack) -> set[int]:
    out: set[int] = set()
    base = nack.base
    for i, byte in enumerate(nack.bitmap):
        if byte:
            first = base + i * 8
            out.update(first + bit for bit in _SET_BITS[byte])
    return out
