"""A malicious root: what it does (:class:`RootFault`) and the taps that do it to its own frames.

The root's group link passes every frame it sends through its tap (``mesh_sim.group_node.GroupLink``):
tamper flips the first byte of ``fraction`` of the chunks (the agents' map check must refuse
them), withhold never sends the last ``fraction`` of the chunks (the agents must fall back to
their own sessions). Replay needs no tap: the root serves an older validly signed map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from firmware_proto.group_forwarder import frame_type
from wire.frames import T_DATA, T_PART, Data, Part, decode, encode

__all__ = ["RootFault", "Tap", "root_tap"]

Tap = Callable[[bytes], bytes | None]


@dataclass
class RootFault:
    """What a malicious root does: tamper (flip a byte in ``fraction`` of chunks), withhold (never
    send the last ``fraction`` of chunks), replay (serve an older validly signed map of the same
    artifact, with its older bytes)."""

    mode: str
    fraction: float = 0.1


def root_tap(fault: RootFault, image_size: int, chunk_size: int) -> Tap | None:
    """The tap a root with ``fault`` puts on its own frames (None: it sends them unchanged)."""
    if fault.mode == "tamper":
        return _tamper_tap(fault, image_size, chunk_size)
    if fault.mode == "withhold":
        return _withhold_tap(fault, image_size, chunk_size)
    return None


def _chunk_blocks(image_size: int, chunk_size: int) -> tuple[int, int]:
    """(map pages, chunks) of the stream: DATA blocks number the pages first, then the chunks."""
    size = chunk_size
    chunks = -(-image_size // size)
    per_page = 1
    while per_page * 2 * 32 <= size:
        per_page *= 2
    return -(-chunks // per_page), chunks


def _tamper_tap(fault: RootFault, image_size: int, chunk_size: int) -> Tap:
    pages, chunks = _chunk_blocks(image_size, chunk_size)
    bad = {pages + c for c in range(chunks) if (c * 7919) % 1000 < fault.fraction * 1000}

    def tap(frame: bytes) -> bytes | None:
        kind = frame_type(frame)
        if kind == T_DATA:
            f = decode(frame)
            assert isinstance(f, Data)
            if f.block in bad:
                return encode(Data(f.stream_id, f.block, bytes([f.payload[0] ^ 0xFF]) + f.payload[1:]))
        elif kind == T_PART:
            p = decode(frame)
            assert isinstance(p, Part)
            if p.block in bad and p.index == 0:
                return encode(
                    Part(p.tag, p.block, p.index, p.count, bytes([p.payload[0] ^ 0xFF]) + p.payload[1:])
                )
        return frame

    return tap


def _withhold_tap(fault: RootFault, image_size: int, chunk_size: int) -> Tap:
    pages, chunks = _chunk_blocks(image_size, chunk_size)
    first = pages + int(chunks * (1.0 - fault.fraction))

    def tap(frame: bytes) -> bytes | None:
        kind = frame_type(frame)
        if kind == T_DATA and int.from_bytes(frame[10:14], "big") >= first:
            return None
        if kind == T_PART and int.from_bytes(frame[4:8], "big") >= first:
            return None
        return frame

    return tap
