"""The installation's telemetry state, one small JSON file in the data directory.

``DATA/telemetry.json``: ``{"first_window": N, "last_sent_window": M}`` — the first countme
window this installation ran in (its age bucket is read from it) and the last window a report
was sent for. It lives with the data, not with the program, so an upgrade (a new meshota in the
same data directory) keeps the age; libdnf#1611 was the age resetting on every upgrade. It holds
no identifier. Written atomically (temporary file, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from wire.countme import age_bucket, window_of

__all__ = ["STATE_FILE", "TelemetryState", "load_state", "save_state"]

STATE_FILE = "telemetry.json"


@dataclass(slots=True)
class TelemetryState:
    first_window: int
    last_sent_window: int | None = None

    def age(self, window: int) -> int:
        return age_bucket(min(self.first_window, window), window)


def load_state(path: Path, now: float, *, create: bool = True) -> TelemetryState:
    """The state in ``path``; a missing or unreadable file starts at ``now``'s window (and is
    written when ``create``)."""
    try:
        doc = json.loads(path.read_text())
        state = TelemetryState(int(doc["first_window"]), doc.get("last_sent_window"))
        if state.last_sent_window is not None:
            state.last_sent_window = int(state.last_sent_window)
        return state
    except (OSError, ValueError, KeyError, TypeError):
        state = TelemetryState(window_of(now))
    if create:
        save_state(path, state)
    return state


def save_state(path: Path, state: TelemetryState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"first_window": state.first_window, "last_sent_window": state.last_sent_window})
    )
    os.replace(tmp, path)
