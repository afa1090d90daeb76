"""Login throttling: token buckets per key with capped state, and a bounded gate for CPU work.

:class:`TokenBuckets` answers "may this key act now, and if not, how long until it may"; its
table holds at most ``max_keys`` buckets (a bucket that refilled completely is the same as no
bucket and goes first; then the least recently used). :class:`WorkGate` runs blocking CPU work
(scrypt) in the thread pool with at most ``workers`` at once and at most ``max_waiting`` callers
queued behind them; a caller beyond that is refused at once (429) instead of queueing unbounded
work while the event loop stays free.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from ._types import ApiError

__all__ = ["TokenBuckets", "WorkGate", "too_many"]

T = TypeVar("T")


def too_many(message: str, retry_after: float) -> ApiError:
    """429 with ``Retry-After`` (whole seconds, at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    return ApiError(429, message, headers=[("Retry-After", str(seconds))])


class TokenBuckets:
    """``burst`` tokens per key, one more every ``refill`` seconds; at most ``max_keys`` keys."""

    def __init__(self, burst: int, refill: float, max_keys: int) -> None:
        if burst < 1 or refill <= 0 or max_keys < 1:
            raise ValueError("burst >= 1, refill > 0 and max_keys >= 1 are required")
        self.burst, self.refill, self.max_keys = burst, refill, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, at = entry
        return min(float(self.burst), tokens + max(0.0, now - at) / self.refill)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token (0: it has one now)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * self.refill

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key``: 0 when taken, else the seconds to wait (nothing taken)."""
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return (1.0 - tokens) * self.refill
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        self._evict(now)
        return 0.0

    def _evict(self, now: float) -> None:
        if len(self._buckets) <= self.max_keys:
            return
        full = [
            k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) / self.refill >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


class WorkGate:
    """Blocking work in the thread pool: ``workers`` at once, ``max_waiting`` queued, else 429."""

    def __init__(self, workers: int, max_waiting: int) -> None:
        if workers < 1 or max_waiting < 0:
            raise ValueError("workers >= 1 and max_waiting >= 0 are required")
        self.workers, self.max_waiting = workers, max_waiting
        self._semaphore = asyncio.Semaphore(workers)
        self._admitted = 0  # running + waiting

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._admitted >= self.workers + self.max_waiting:
            raise too_many("server busy checking passwords; retry later", 1.0)
        self._admitted += 1
        try:
            async with self._semaphore:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._admitted -= 1
