"""Answer a redelivered request once: replies remembered per (device, request id) for a TTL.

Sans-I/O: time comes in as ``now``. A QoS 1 redelivery is byte-identical, so the cache keys on
(device, request id) and also remembers a digest of the request: the same id with a different
request (a node that cycles a small id space) is a new request, not a duplicate.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["ReplyCache"]


@dataclass(slots=True)
class _Entry:
    digest: bytes
    expires: float
    reply: bytes | None  # None: being handled right now


class ReplyCache:
    def __init__(self, ttl: float = 120.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    @staticmethod
    def digest(payload: bytes) -> bytes:
        return hashlib.blake2b(payload, digest_size=16).digest()

    def begin(self, device: str, request_id: str, payload: bytes, now: float) -> tuple[bool, bytes | None]:
        """(is new, cached reply). New: the caller handles it and calls :meth:`finish`.

        Not new with a ``None`` reply: the first copy is still being handled; drop this one.
        """
        self._expire(now)
        key = (device, request_id)
        digest = self.digest(payload)
        entry = self._entries.get(key)
        if entry is not None and entry.digest == digest:
            return False, entry.reply
        self._entries[key] = _Entry(digest, now + self.ttl, None)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True, None

    def finish(self, device: str, request_id: str, reply: bytes, now: float) -> None:
        entry = self._entries.get((device, request_id))
        if entry is not None:
            entry.reply = reply
            entry.expires = now + self.ttl

    def forget(self, device: str, request_id: str) -> None:
        self._entries.pop((device, request_id), None)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
