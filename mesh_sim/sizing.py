"""Chunk sizes that fit the radio: a DATA frame, and every map page, in one datagram."""

from __future__ import annotations

import math

from wire.chunk_map import HASH_LEN, leaves_per_page
from wire.frames import PART_HEADER, PARTS_MAX

from .baselines import DATA_HEADER
from .radio import RadioProfile

__all__ = ["GROUP_DATA_FRAMES", "GROUP_PARTS", "default_chunk_size", "part_chunk_size", "part_room"]

# group-stream DATA datagrams of at most this many frames: a broadcast datagram is lost if any of its
# 6LoWPAN fragments is (no link ACK or retry for broadcast), so on 802.15.4 a block fills 4 frames
# (399 B chunks) rather than a whole 1280 B datagram (12 frames); one-frame datagrams (WiFi) unchanged
GROUP_DATA_FRAMES = 4
# with parts (SPEC.md §3.2) a block is at most this many one-frame PART frames
GROUP_PARTS = 16


def part_room(profile: RadioProfile, mode: str = "auto") -> int:
    """PART payload bytes per link frame (``RootConfig.part_room``); 0: whole DATA datagrams.
    ``auto``: parts where a DATA datagram would be fragmented (a network layer that fragments,
    802.15.4 6LoWPAN); WiFi's one-frame datagrams gain nothing from them."""
    if mode == "off" or (mode == "auto" and profile.max_datagram <= 0):
        return 0
    return profile.payload_room() - PART_HEADER


def part_chunk_size(room: int, image_size: int, parts: int = GROUP_PARTS) -> int:
    """The largest chunk of at most ``parts`` parts of ``room`` bytes whose map pages fit in
    16 parts (the most a block may have)."""
    parts = min(parts, PARTS_MAX)
    chunk = parts * room
    while chunk > 64:
        per_page = leaves_per_page(chunk)
        pages = math.ceil(math.ceil(image_size / chunk) / per_page)
        depth = max(0, (pages - 1).bit_length())
        if (per_page + depth) * HASH_LEN <= PARTS_MAX * room:
            return chunk
        chunk = per_page * HASH_LEN - 1
    return 64


def default_chunk_size(profile: RadioProfile, image_size: int, max_frames: int = 0) -> int:
    """The largest chunk whose DATA frame — and every map page — fits one datagram; with
    ``max_frames``, whose DATA datagram is also at most that many link frames (6LoWPAN fragments)."""
    room = profile.datagram_room() - DATA_HEADER
    chunk = room
    if max_frames > 0:
        while chunk > 64 and len(profile.frames_of(chunk + DATA_HEADER)) > max_frames:
            chunk -= 1
    while chunk > 64:
        per_page = leaves_per_page(chunk)
        pages = math.ceil(math.ceil(image_size / chunk) / per_page)
        depth = max(0, (pages - 1).bit_length())
        if (per_page + depth) * HASH_LEN <= room:
            return chunk
        chunk = per_page * HASH_LEN - 1  # fewer leaves per page
    return 64
