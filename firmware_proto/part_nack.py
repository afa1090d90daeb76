"""A node's NACK naming the missing parts of its partly held blocks (SPEC.md §3.2).

Blocks missing wholly stay in the bitmap as before; a block some of whose parts arrived is also
marked in the ``partial`` bitmap and gets a 16-bit mask of its missing parts. At most ``cap``
partly held blocks are named per NACK: the bitmap is cut (whole bytes) before the next one, which
is asked for in a later round (as a bitmap cut at ``nack_max_bytes``).
"""

from __future__ import annotations

from firmware_proto.chunk_receiver import ChunkReceiver
from wire.frames import NACK_PARTS, Nack

__all__ = ["all_missing_parts", "parts_nack"]


def all_missing_parts(rec: ChunkReceiver) -> dict[int, int]:
    """Block → missing-parts mask of every block ``rec`` does not hold."""
    return {b: rec.missing_parts(b) for b in rec.missing()}


def parts_nack(rec: ChunkReceiver, plain: Nack, cut: bool, cap: int) -> tuple[Nack, dict[int, int] | None]:
    """``plain`` (the block bitmap NACK) with the missing parts of the partly held blocks it lists;
    and, if the NACK does not name everything missing (cut), everything missing (for suppression)."""
    base, bits = plain.base, plain.bitmap
    end = base + 8 * len(bits)
    partial = sorted(b for b in rec.partial if base <= b < end and b not in rec.bitmap)
    if not partial:
        return plain, (all_missing_parts(rec) if cut else None)
    cap = max(8, cap)
    if len(partial) > cap:
        bits = bits[: (partial[cap] - base) // 8]
        end = base + 8 * len(bits)
        partial = [b for b in partial[:cap] if b < end]
        cut = True
    marks = bytearray(len(bits))
    for b in partial:
        off = b - base
        marks[off >> 3] |= 0x80 >> (off & 7)
    frame = Nack(
        plain.stream_id,
        plain.round,
        plain.flags | NACK_PARTS,
        base,
        bits,
        bytes(marks),
        tuple(rec.missing_parts(b) for b in partial),
    )
    return frame, (all_missing_parts(rec) if cut else None)
