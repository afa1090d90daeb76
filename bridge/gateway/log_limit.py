"""Rate-limited, aggregated logging of dropped and refused datagrams (sans-I/O: give it ``now``).

A keyless sender chooses how many datagrams the gateway drops, so one log line per drop lets it
fill the disk (garbage produced ~108 B of WARNING per datagram). :class:`DropLog` logs the first
drop of each *kind* in an interval at once and counts the rest; when the interval is over it
emits one summary line per kind with the count (``… and 4,211 more in the last 10 s``).

The kind is the reason with quoted text and numbers removed (reasons quote peer-chosen client ids
and topics, which must not mint new kinds), and at most :attr:`DropLog.max_kinds` kinds are
tracked: the rest share the kind ``"other"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_INTERVAL", "DropLog", "kind_of"]

DEFAULT_INTERVAL = 10.0
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'|\d+")


def kind_of(reason: str) -> str:
    """The kind of a drop reason: the text before the first ':' (or all of it), with quoted
    strings and numbers blanked, at most 80 characters."""
    head = _QUOTED.sub("_", reason.split(":", 1)[0])
    return head[:80]


@dataclass(slots=True)
class _Window:
    start: float
    suppressed: int = 0
    example: str = ""


class DropLog:
    """One line per kind per interval, plus a count of what was not logged."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, max_kinds: int = 64) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.max_kinds = max_kinds
        self._windows: dict[str, _Window] = {}
        self.logged = 0
        self.suppressed = 0

    def record(self, kind: str, line: str, now: float) -> list[str]:
        """A drop happened; returns the lines to log now (none while this kind is muted)."""
        out = self.due(now)
        if kind not in self._windows and len(self._windows) >= self.max_kinds:
            kind = "other"
        w = self._windows.get(kind)
        if w is None:
            self._windows[kind] = _Window(now)
            self.logged += 1
            out.append(line)
            return out
        w.suppressed += 1
        w.example = line
        self.suppressed += 1
        return out

    def due(self, now: float) -> list[str]:
        """Summaries of intervals that are over; their kinds may log at once again."""
        out: list[str] = []
        for kind in [k for k, w in self._windows.items() if now >= w.start + self.interval]:
            w = self._windows.pop(kind)
            if w.suppressed:
                out.append(
                    f"{w.suppressed:,} more like this in the last {now - w.start:.0f} s"
                    f" (kind {kind!r}; latest: {w.example})"
                )
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`due` has a summary to give (None: nothing muted)."""
        pending = [w.start + self.interval for w in self._windows.values() if w.suppressed]
        return min(pending) if pending else None
