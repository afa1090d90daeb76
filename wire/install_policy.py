"""Install windows and consent: the rule an operator writes, and what a node is told.

The operator's rule (:class:`InstallRule`, JSON on the management API)::

    {"windows": [{"days": ["mon", "tue"], "start": "22:00", "duration": 14400}],
     "time_zone": "Europe/Berlin", "consent": "automatic"}

``days`` are local weekdays (``mon`` .. ``sun``), ``start`` local ``HH:MM``, ``duration`` seconds
(60 .. 7 days); an empty ``windows`` list means "any time". ``consent`` is ``automatic`` (install
inside a window), ``download-then-ask`` (download at once, install only after the owner said yes)
or ``ask-first`` (nothing, not even the download, before the owner said yes).

A node never needs a time-zone database: the server turns the rule into UTC intervals for the next
:data:`HORIZON` seconds (:meth:`InstallRule.intervals`, zoneinfo, daylight-saving aware) and the
node gets :class:`InstallPolicy` in the ``meshota.install`` field of ``next`` (mender-client ignores
fields it does not know). A node asks ``next`` again before ``until``; past it without a fresh
policy it waits (never installs on stale windows). Flash/wire form: :meth:`InstallPolicy.encode`
(wire/SPEC.md §4, record ``policy``).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wire.errors import WireError

__all__ = [
    "CONSENT_POLICIES",
    "DAYS",
    "HORIZON",
    "MAX_INTERVALS",
    "MAX_WINDOWS",
    "InstallPolicy",
    "InstallRule",
    "PolicyError",
    "Window",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONSENT_POLICIES = ("automatic", "download-then-ask", "ask-first")
HORIZON = 7 * 24 * 3600  # how far ahead the server lists a node's windows
MAX_WINDOWS = 16  # rules per policy
MAX_INTERVALS = 64  # intervals a node is sent (16 rules x 7 days fit comfortably)
_MAX_DURATION = 7 * 24 * 3600


class PolicyError(WireError):
    """An install rule or an encoded policy that is not what the contract says."""


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start_minute: int  # local minutes after midnight
    duration: int  # seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "days": [DAYS[d] for d in sorted(self.days)],
            "start": f"{self.start_minute // 60:02d}:{self.start_minute % 60:02d}",
            "duration": self.duration,
        }


def _window(obj: Any, where: str) -> Window:
    if not isinstance(obj, dict):
        raise PolicyError(f"{where} must be an object with days, start and duration")
    extra = set(obj) - {"days", "start", "duration"}
    if extra:
        raise PolicyError(f"{where}: unknown field {sorted(extra)[0]!r}")
    days = obj.get("days")
    if not isinstance(days, list) or not days or not all(isinstance(d, str) for d in days):
        raise PolicyError(f"{where}.days must be a non-empty list of {', '.join(DAYS)}")
    bad = [d for d in days if d.lower() not in DAYS]
    if bad:
        raise PolicyError(f"{where}.days: {bad[0]!r} is not one of {', '.join(DAYS)}")
    start = obj.get("start")
    hh, sep, mm = start.partition(":") if isinstance(start, str) else ("", "", "")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and int(hh) < 24 and int(mm) < 60):
        raise PolicyError(f"{where}.start must be local time HH:MM, got {start!r}")
    duration = obj.get("duration")
    if not isinstance(duration, int) or isinstance(duration, bool) or not 60 <= duration <= _MAX_DURATION:
        raise PolicyError(f"{where}.duration must be whole seconds in 60..{_MAX_DURATION}")
    return Window(frozenset(DAYS.index(d.lower()) for d in days), int(hh) * 60 + int(mm), duration)


@dataclass(frozen=True, slots=True)
class InstallRule:
    windows: tuple[Window, ...] = ()
    time_zone: str = "UTC"
    consent: str = "automatic"

    @classmethod
    def parse(cls, obj: Any) -> InstallRule:
        """The rule from its JSON form; :class:`PolicyError` names the bad field."""
        if not isinstance(obj, dict):
            raise PolicyError("an install policy must be a JSON object")
        extra = set(obj) - {"windows", "time_zone", "consent"}
        if extra:
            raise PolicyError(f"install policy: unknown field {sorted(extra)[0]!r}")
        windows = obj.get("windows", [])
        if not isinstance(windows, list) or len(windows) > MAX_WINDOWS:
            raise PolicyError(f"windows must be a list of at most {MAX_WINDOWS} windows")
        tz = obj.get("time_zone", "UTC")
        if not isinstance(tz, str) or not 1 <= len(tz) <= 64 or ".." in tz or tz.startswith("/"):
            raise PolicyError("time_zone must be an IANA time zone name such as Europe/Berlin")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(f"time_zone {tz!r} is not a known IANA time zone") from None
        consent = obj.get("consent", "automatic")
        if consent not in CONSENT_POLICIES:
            raise PolicyError(f"consent must be one of {', '.join(CONSENT_POLICIES)}, got {consent!r}")
        return cls(tuple(_window(w, f"windows[{i}]") for i, w in enumerate(windows)), tz, consent)

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": [w.to_json() for w in self.windows],
            "time_zone": self.time_zone,
            "consent": self.consent,
        }

    def intervals(self, start: float, horizon: float = HORIZON) -> tuple[tuple[float, float], ...] | None:
        """Open intervals ``[a, b)`` in UTC seconds that overlap ``[start, start + horizon)``,
        merged and sorted; ``None`` when there are no windows (any time)."""
        if not self.windows:
            return None
        zone = ZoneInfo(self.time_zone)
        end = start + horizon
        first = dt.datetime.fromtimestamp(start, zone).date() - dt.timedelta(days=8)  # a 7-day window
        spans: list[tuple[float, float]] = []
        for offset in range(int(horizon // 86400) + 10):
            day = first + dt.timedelta(days=offset)
            for w in self.windows:
                if day.weekday() not in w.days:
                    continue
                local = dt.datetime(
                    day.year, day.month, day.day, w.start_minute // 60, w.start_minute % 60, tzinfo=zone
                )
                a = local.timestamp()
                b = a + w.duration
                if b > start and a < end:
                    spans.append((a, b))
        spans.sort()
        merged: list[tuple[float, float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return tuple(merged[:MAX_INTERVALS])

    def policy(self, now: float, horizon: float = HORIZON) -> InstallPolicy:
        """What a node is told at ``now``."""
        return InstallPolicy(self.consent, self.intervals(now, horizon), now + horizon)


_HEAD = struct.Struct(">BBIH")  # consent, flags (1: any time), until, interval count
_SPAN = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class InstallPolicy:
    """What a node knows: consent policy, open UTC intervals (``None``: any time), valid until."""

    consent: str = "automatic"
    windows: tuple[tuple[float, float], ...] | None = None
    until: float = float("inf")

    def window_open(self, now: float) -> bool:
        if now >= self.until:
            return False  # stale: wait for the next check-in's policy
        if self.windows is None:
            return True
        return any(a <= now < b for a, b in self.windows)

    def next_open(self, now: float) -> float | None:
        """When a window next opens (``now`` if one is open), ``None`` if not before ``until``."""
        if self.window_open(now):
            return now
        if self.windows is None:
            return None
        later = [a for a, _ in self.windows if a > now and a < self.until]
        return min(later) if later else None

    def window_close(self, now: float) -> float | None:
        """When the open window closes (``None`` when none is open, ``until`` for any time)."""
        if not self.window_open(now):
            return None
        if self.windows is None:
            return self.until
        return min(min(b for a, b in self.windows if a <= now < b), self.until)

    def shifted(self, delta: float) -> InstallPolicy:
        """The same policy on another clock (a driver whose ``now`` is monotonic adds
        ``monotonic - wall``): windows are UTC seconds on the wire."""
        spans = None if self.windows is None else tuple((a + delta, b + delta) for a, b in self.windows)
        return InstallPolicy(self.consent, spans, self.until + delta)

    # -- the ``meshota.install`` field of next ---------------------------------------------------
    def to_next(self) -> dict[str, Any]:
        return {
            "consent": self.consent,
            "windows": None if self.windows is None else [[int(a), int(b)] for a, b in self.windows],
            "until": int(self.until),
        }

    @classmethod
    def from_next(cls, obj: Mapping[str, Any]) -> InstallPolicy:
        consent = obj.get("consent")
        if consent not in CONSENT_POLICIES:
            raise PolicyError(f"install.consent {consent!r} is not one of {', '.join(CONSENT_POLICIES)}")
        until = obj.get("until")
        if not isinstance(until, int) or isinstance(until, bool) or not 0 <= until < 1 << 32:
            raise PolicyError("install.until must be UTC seconds")
        raw = obj.get("windows")
        if raw is None:
            return cls(consent, None, float(until))
        if not isinstance(raw, list) or len(raw) > MAX_INTERVALS:
            raise PolicyError(f"install.windows must be null or at most {MAX_INTERVALS} [start, end] pairs")
        spans = []
        for item in raw:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 32 for x in item)
                or item[0] >= item[1]
            ):
                raise PolicyError("install.windows items must be [start, end] UTC seconds, start < end")
            spans.append((float(item[0]), float(item[1])))
        return cls(consent, tuple(spans), float(until))

    # -- record ``policy`` on flash (wire/SPEC.md §4) ------------------------------------------
    def encode(self) -> bytes:
        until = (1 << 32) - 1 if self.until >= (1 << 32) - 1 else int(self.until)
        spans = () if self.windows is None else self.windows
        out = _HEAD.pack(
            CONSENT_POLICIES.index(self.consent), 1 if self.windows is None else 0, until, len(spans)
        )
        return out + b"".join(_SPAN.pack(int(a), int(b)) for a, b in spans)

    @classmethod
    def decode(cls, data: bytes) -> InstallPolicy:
        if len(data) < _HEAD.size:
            raise PolicyError("policy record too short")
        consent, flags, until, count = _HEAD.unpack_from(data)
        if consent >= len(CONSENT_POLICIES) or flags > 1 or count > MAX_INTERVALS:
            raise PolicyError("policy record has a bad consent, flag or count")
        if len(data) != _HEAD.size + count * _SPAN.size or (flags and count):
            raise PolicyError("policy record length does not match its count")
        spans = tuple(
            (float(a), float(b))
            for a, b in (_SPAN.unpack_from(data, _HEAD.size + i * _SPAN.size) for i in range(count))
        )
        until_f = float("inf") if until == (1 << 32) - 1 else float(until)
        return cls(CONSENT_POLICIES[consent], None if flags else spans, until_f)
