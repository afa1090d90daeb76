"""Group-link frames: the wire codec between a root and the nodes it streams an image to.

Every frame starts ``0x4F ('O') type``; multi-byte integers are big-endian. Byte layouts are in
SPEC.md §3. ``decode`` raises :class:`FrameError` (and nothing else) on bytes that are not a frame.

``stream_id`` (8 bytes) is :meth:`MapHead.stream_id` of the signed chunk map being streamed, so a
new root serving the same map continues the same stream and nodes keep their bitmaps.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from wire.errors import WireError

__all__ = [
    "CODED_MAX_BLOCKS",
    "END_COMPLETE",
    "END_GAVE_UP",
    "FRAME_MAGIC",
    "NACK_DONE",
    "NACK_NEED_HEAD",
    "NACK_PARTS",
    "NO_STREAM",
    "PARTS_ALL",
    "PARTS_MAX",
    "PART_HEADER",
    "Coded",
    "Data",
    "End",
    "Frame",
    "FrameError",
    "Head",
    "Nack",
    "Part",
    "Poll",
    "Want",
    "burst_head",
    "decode",
    "encode",
    "encode_parts",
    "missing_from_nack",
    "nack_bitmap",
    "nack_covers",
    "nack_parts",
    "part_bounds",
    "parts_covers",
    "xor_blocks",
]

FRAME_MAGIC = 0x4F
T_WANT, T_HEAD, T_DATA, T_POLL, T_NACK, T_END, T_CODED, T_PART = 1, 2, 3, 4, 5, 6, 7, 8
CODED_MAX_BLOCKS = 8
NACK_NEED_HEAD = 0x01
NACK_DONE = 0x02
NACK_PARTS = 0x04  # the NACK also says which parts of partly held blocks are missing (SPEC.md §3.2)
PARTS_MAX = 16  # a block is sent as 1..16 PART frames
PARTS_ALL = 0xFFFF  # missing-parts mask of a block missing wholly
PART_HEADER = 9  # 0x4F, type, stream tag (2), block (4), part byte
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
    # NACK_PARTS only: bit i set = block base + i is partly held; one mask per such block, in
    # ascending order, bit 15 - j set = its part j missing (SPEC.md §3.2)
    partial: bytes = b""
    masks: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Part:
    """Root → group: part ``index`` of ``count`` of block ``block``'s DATA payload (SPEC.md §3.2).

    A PART fits one link frame (no 6LoWPAN fragmentation), so a receiver keeps the parts it got
    and a repair resends only the lost ones. Like a 6LoWPAN fragment it carries a 2-byte tag
    (``stream_id[0:2]``), not the whole stream id; the block it completes is verified as any DATA."""

    tag: bytes
    block: int
    index: int
    count: int
    payload: bytes

    @property
    def stream_id(self) -> bytes:
        return self.tag


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


Frame = Want | Head | Data | Poll | Nack | End | Coded | Part


def part_bounds(length: int, count: int, index: int) -> tuple[int, int]:
    """Byte range [start, end) of part ``index`` of ``count`` of a ``length``-byte payload: parts
    are ``ceil(length / count)`` bytes, the last what remains (SPEC.md §3.2). Empty if none left."""
    size = -(-length // count)
    start = min(length, index * size)
    return start, min(length, start + size)


def encode_parts(tag: bytes, block: int, count: int, indexes: Sequence[int], payload: bytes) -> list[bytes]:
    """The PART frames ``indexes`` (each ``0 <= j < count``) of a block whose DATA payload is
    ``payload``: ``encode(Part(tag, block, j, count, payload[part_bounds(...)]))`` for each j, with
    the shared header packed once."""
    if len(tag) != 2:
        raise FrameError("PART tag must be 2 bytes")
    if not 1 <= count <= PARTS_MAX:
        raise FrameError(f"PART index must be below its count (1..{PARTS_MAX})")
    head = bytes([FRAME_MAGIC, T_PART]) + tag + struct.pack(">I", block)
    length = len(payload)
    size = -(-length // count)
    out = []
    for j in indexes:
        start = min(length, j * size)
        piece = payload[start : start + size]
        if not 0 <= j < count or not piece:
            _check_part(j, count, piece)
        out.append(b"".join((head, _BYTE[(j << 4) | (count - 1)], piece)))
    return out


_BYTE = [bytes([b]) for b in range(256)]


def burst_head(frames: Sequence[bytes]) -> bytes | None:
    """The 8 header bytes (magic, type, stream tag, block) every frame starts with if every frame
    is a PART that :func:`decode` accepts and they share that header (the parts of one block),
    else None; checked on the raw headers, no frame decoded. A part is then ``(data[8] >> 4,
    (data[8] & 15) + 1, data[9:])`` = (index, count, payload). Any non-empty subset of such frames
    has the same head (what a driver that checked
    a burst once may say of the frames each receiver got: ``UpdateAgent.receive_burst``)."""
    if not frames:
        return None
    prefix = frames[0][:8]
    if len(prefix) != 8 or prefix[0] != FRAME_MAGIC or prefix[1] != T_PART:
        return None
    for data in frames:
        # decode's rules for a PART: a payload (len > header), index below count (count 1..16)
        if len(data) <= PART_HEADER or data[8] not in _PART_BYTE_OK or not data.startswith(prefix):
            return None
    return prefix


_PART_BYTE_OK = frozenset(pc for pc in range(256) if pc >> 4 <= pc & 15)  # index <= count - 1


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
        out = (
            bytes([FRAME_MAGIC, T_NACK])
            + _sid(frame.stream_id)
            + struct.pack(">HBI", frame.round, frame.flags, frame.base)
        )
        if not frame.flags & NACK_PARTS:
            return out + frame.bitmap
        _check_parts(frame.bitmap, frame.partial, frame.masks)
        return (
            out
            + bytes([len(frame.bitmap)])
            + frame.bitmap
            + frame.partial
            + b"".join(struct.pack(">H", m) for m in frame.masks)
        )
    if isinstance(frame, Part):
        if len(frame.tag) != 2:
            raise FrameError("PART tag must be 2 bytes")
        _check_part(frame.index, frame.count, frame.payload)
        return (
            bytes([FRAME_MAGIC, T_PART])
            + frame.tag
            + struct.pack(">IB", frame.block, (frame.index << 4) | (frame.count - 1))
            + frame.payload
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


def _check_part(index: int, count: int, payload: bytes) -> None:
    if not 1 <= count <= PARTS_MAX or not 0 <= index < count:
        raise FrameError(f"PART index must be below its count (1..{PARTS_MAX})")
    if not payload:
        raise FrameError("PART without a payload")


def _check_parts(bitmap: bytes, partial: bytes, masks: tuple[int, ...]) -> None:
    if len(bitmap) > 255 or len(partial) != len(bitmap):
        raise FrameError("NACK parts: partial bitmap must be as long as the bitmap (<= 255 bytes)")
    p = int.from_bytes(partial, "big")
    if p & ~int.from_bytes(bitmap, "big"):
        raise FrameError("NACK parts: a partly held block is not in the bitmap")
    if bin(p).count("1") != len(masks):
        raise FrameError("NACK parts: one mask per partly held block")
    if any(not 0 < m <= 0xFFFF for m in masks):
        raise FrameError("NACK parts: a mask must name 1..16 parts")


def _check_coded(blocks: tuple[int, ...]) -> None:
    if not 2 <= len(blocks) <= CODED_MAX_BLOCKS:
        raise FrameError(f"CODED combines 2..{CODED_MAX_BLOCKS} blocks")
    if len(set(blocks)) != len(blocks):
        raise FrameError("CODED block indexes repeat")


_DECODED_MAX = 64
_decoded: dict[int, tuple[bytes, Frame]] = {}  # id(bytes object) → (that object, its frame): see decode


def decode(data: bytes) -> Frame:
    """The frame in ``data`` (:class:`FrameError` if it is none).

    Frames are immutable: the same ``bytes`` object decoded again (one broadcast, or a burst of a
    block's parts, handed to many receivers, as the simulator does) returns the frame decoded
    before, without parsing. The memo holds the last ``_DECODED_MAX`` objects (each entry keeps its
    bytes object alive and is checked by identity, so an id reused by another object never
    matches); an entry is one tuple stored whole, so a reader never pairs one frame's bytes with
    another's."""
    hit = _decoded.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    frame = _decode(data)
    if type(data) is bytes:
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[id(data)] = (data, frame)
    return frame


def _decode(data: bytes) -> Frame:
    if len(data) < 10 or data[0] != FRAME_MAGIC:
        raise FrameError("not a group-link frame")
    kind, sid, body = data[1], data[2:10], data[10:]
    if kind == T_PART:
        block, pc = struct.unpack_from(">IB", data, 4)
        part = Part(data[2:4], block, pc >> 4, (pc & 15) + 1, data[PART_HEADER:])
        _check_part(part.index, part.count, part.payload)
        return part
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
            if not flags & NACK_PARTS:
                return Nack(sid, rnd, flags, base, body[7:])
            n = body[7]
            bitmap, partial = body[8 : 8 + n], body[8 + n : 8 + 2 * n]
            rest = body[8 + 2 * n :]
            if len(partial) != n or len(rest) % 2:
                raise FrameError("NACK parts truncated")
            masks = struct.unpack(f">{len(rest) // 2}H", rest)
            _check_parts(bitmap, partial, masks)
            return Nack(sid, rnd, flags, base, bitmap, partial, masks)
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


_nack_parts_memo: dict[int, tuple[Nack, dict[int, int]]] = {}  # id → (the Nack, its result)


def nack_parts(nack: Nack) -> dict[int, int]:
    """Block → missing-parts mask of everything ``nack`` asks for (:data:`PARTS_ALL` for a
    block missing wholly; a NACK without NACK_PARTS asks for whole blocks only).

    The results of the last few (immutable) ``Nack`` objects are kept by identity: a NACK is
    overheard by every node of a cell, and :func:`decode`'s memo hands them one object (each of
    them also looks at its own pending NACK in between). Callers must not change the dict."""
    hit = _nack_parts_memo.get(id(nack))
    if hit is not None and hit[0] is nack:
        return hit[1]
    out = dict.fromkeys(missing_from_nack(nack), PARTS_ALL)
    if nack.flags & NACK_PARTS and nack.masks:
        partial = Nack(nack.stream_id, 0, 0, nack.base, nack.partial)
        for block, mask in zip(sorted(missing_from_nack(partial)), nack.masks, strict=True):
            out[block] = mask
    if len(_nack_parts_memo) >= 32:
        _nack_parts_memo.clear()
    _nack_parts_memo[id(nack)] = (nack, out)  # (holding the Nack: its id is not reused meanwhile)
    return out


def parts_covers(other: dict[int, int], mine: dict[int, int]) -> bool:
    """Every part ``mine`` asks for, ``other`` asks for too (both from :func:`nack_parts`)."""
    return all(other.get(block, 0) & mask == mask for block, mask in mine.items())
