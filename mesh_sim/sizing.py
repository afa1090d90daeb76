"""Chunk sizes that fit the radio: a DATA frame, and every map page, in one datagram."""

from __future__ import annotations

import math

from wire.chunk_map import HASH_LEN, leaves_per_page

from .baselines import DATA_HEADER
from .radio import RadioProfile

__all__ = ["GROUP_DATA_FRAMES", "default_chunk_size"]

# group-stream DATA datagrams of at most this many frames: a broadcast datagram is lost if any of its
# 6LoWPAN fragments is (no link ACK or retry for broadcast), so on 802.15.4 a block fills 4 frames
# (399 B chunks) rather than a whole 1280 B datagram (12 frames); one-frame datagrams (WiFi) unchanged
GROUP_DATA_FRAMES = 4


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
