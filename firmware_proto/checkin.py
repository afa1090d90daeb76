"""When a node calls home: the owner's check-in interval with 0.5–1.5× jitter (sans-I/O).

The interval comes from the server (``next``: the ``meshota.checkin_interval`` field, or the
``X-Meshota-Checkin-Interval`` header on every answer, 204 included), set per fleet or group by
the owner (docs/rollouts.md). Each wait is ``interval × uniform(0.5, 1.5)`` from an injected
``random.Random``, so a fleet that booted together spreads out instead of calling home in step.
Bounds: :data:`MIN_INTERVAL`..:data:`MAX_INTERVAL`; a value outside (or not a number) is ignored
and the previous interval kept.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

__all__ = ["JITTER", "MAX_INTERVAL", "MIN_INTERVAL", "CheckinSchedule"]

JITTER = (0.5, 1.5)
MIN_INTERVAL = 10
MAX_INTERVAL = 7 * 24 * 3600


class CheckinSchedule:
    def __init__(self, interval: float, rng: random.Random) -> None:
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValueError(f"check-in interval {interval} s is outside {MIN_INTERVAL}..{MAX_INTERVAL}")
        self.interval = float(interval)
        self.rng = rng
        self.due: float | None = None

    def update(self, interval: Any) -> bool:
        """A server-sent interval; True when it was taken."""
        if isinstance(interval, str) and interval.isdigit():
            interval = int(interval)
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            return False
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            return False
        self.interval = float(interval)
        return True

    def update_from_next(
        self, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
    ) -> bool:
        taken = False
        if headers is not None:
            taken = self.update(headers.get("x-meshota-checkin-interval"))
        extra = body.get("meshota") if body is not None else None
        if isinstance(extra, Mapping):
            taken = self.update(extra.get("checkin_interval")) or taken
        return taken

    def schedule(self, now: float) -> float:
        """After a check-in at ``now``: when the next one is due."""
        lo, hi = JITTER
        self.due = now + self.interval * self.rng.uniform(lo, hi)
        return self.due

    def next_timer(self) -> float | None:
        return self.due
