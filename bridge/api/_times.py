"""RFC 3339 timestamps as Mender writes them."""

from __future__ import annotations

import datetime as dt

__all__ = ["parse_rfc3339", "rfc3339"]


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
