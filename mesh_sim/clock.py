"""Discrete-event clock: a heap of ``(time, seq, callback)``, SimPy-core style.

The sequence number breaks ties, so the same seed gives the same run; a callback that raises stops
the run (the exception propagates out of :meth:`EventClock.run`) instead of vanishing. Protocol
objects stay sans-I/O: the clock only calls them with ``now``.

``trace(*fields)`` folds what happened into a running BLAKE2b digest; two runs with one seed give
the same :meth:`trace_hash`.
"""

from __future__ import annotations

import gc
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from heapq import heappop, heappush
from typing import Any

__all__ = ["EventClock", "SimulationError"]


class SimulationError(RuntimeError):
    """A callback failed; the run stopped at ``at`` (the original error is ``__cause__``)."""

    def __init__(self, at: float, message: str) -> None:
        super().__init__(f"t={at:.6f}s: {message}")
        self.at = at


# A run allocates millions of small objects that live to its end (frames queued, blocks stored,
# timers); CPython's default thresholds (700, 10, 10) then walk the whole heap again and again: 8 % of
# a 10,000-node run's CPU (12.3 s of 149 s, 2,928 collections). While a clock runs, what existed
# before is frozen out of collection and the young generation is collected every 100,000 allocations
# instead of 700 (cycles are still found, only later); both are put back when the last run returns.
GC_THRESHOLD = (100_000, 50, 100)
_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple[int, int, int] = (700, 10, 10)


@contextmanager
def _quiet_gc() -> Iterator[None]:
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLD)
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


class EventClock:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self.events_run = 0
        self.stopped = False

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` at virtual time ``when`` (never earlier than now)."""
        self._seq += 1
        heappush(self._heap, (when if when > self.now else self.now, self._seq, callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    def trace(self, *fields: object) -> None:
        self._digest.update(repr((round(self.now, 9), fields)).encode())

    def trace_hash(self) -> str:
        return self._digest.hexdigest()

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def stop(self) -> None:
        """Make :meth:`run` return after the current callback."""
        self.stopped = True

    def run(self, until: float = float("inf"), *, on_step: Callable[[float], None] | None = None) -> float:
        """Run events in (time, seq) order up to ``until``; return the virtual time reached."""
        with _quiet_gc():
            return self._run(until, on_step)

    def _run(self, until: float, on_step: Callable[[float], None] | None) -> float:
        heap = self._heap
        pop = heappop
        self.stopped = False
        count = self.events_run
        try:
            while heap and not self.stopped:
                event = pop(heap)
                when = event[0]
                if when > until:
                    heappush(heap, event)  # (not due: back where it was)
                    self.now = until
                    return until
                self.now = when
                count += 1
                try:
                    event[2](*event[3])
                except SimulationError:
                    raise
                except Exception as exc:
                    callback = event[2]
                    raise SimulationError(
                        when, f"{getattr(callback, '__qualname__', callback)} failed: {exc!r}"
                    ) from exc
                if on_step is not None and not count & 0x3FFF:
                    self.events_run = count
                    on_step(self.now)
        finally:
            self.events_run = count
        return self.now
