"""When to send (sans-I/O: every method takes ``now``; the caller owns the clock and the RNG).

Once per countme window, at a moment drawn uniformly from the window (from ``now`` on when the
window has begun already), so reports of many installations do not arrive together and their
arrival time says nothing about when each started. A failed send is retried at a new random
moment 1 to 6 hours later within the same window; only the first failure of the process is to
be logged (:meth:`Schedule.failed` says so), the rest are silent.
"""

from __future__ import annotations

import random

from wire.countme import WEEK, window_of, window_start

from .state import TelemetryState

__all__ = ["Schedule"]

RETRY_MIN, RETRY_MAX = 3600.0, 6 * 3600.0


class Schedule:
    def __init__(self, state: TelemetryState, rng: random.Random) -> None:
        self.state = state
        self.rng = rng
        self._planned: tuple[int, float] | None = None  # (window, moment)
        self._failure_logged = False

    def _plan(self, window: int, earliest: float) -> float:
        start, end = window_start(window), window_start(window + 1)
        low = max(start, earliest)
        moment = low + self.rng.random() * (end - low)
        self._planned = (window, moment)
        return moment

    def next_send(self, now: float) -> float:
        """The moment of the next attempt (>= now's window start; may be in the past: due)."""
        window = window_of(now)
        if self.state.last_sent_window is not None and self.state.last_sent_window >= window:
            window += 1
        if self._planned is not None and self._planned[0] >= window:
            return self._planned[1]
        return self._plan(window, now)

    def due(self, now: float) -> int | None:
        """The window to send a report for now, or None."""
        moment = self.next_send(now)
        if moment <= now and self._planned is not None:
            return self._planned[0]
        return None

    def sent(self, window: int) -> None:
        self.state.last_sent_window = window
        self._planned = None

    def failed(self, window: int, now: float) -> bool:
        """Plan a retry; True for the first failure of this process (log it), else False."""
        retry = now + RETRY_MIN + self.rng.random() * (RETRY_MAX - RETRY_MIN)
        if retry < window_start(window + 1):
            self._planned = (window, retry)
        else:
            self._planned = None  # next window: a fresh random moment there
            self._plan(window + 1, window_start(window + 1))
        first = not self._failure_logged
        self._failure_logged = True
        return first


assert WEEK > RETRY_MAX
