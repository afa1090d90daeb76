"""The one byte-range parser (RFC 9110 §14.1.2 / §14.2), used by artifact downloads, chunk maps
and the MQTT adapter's block clamp.

Accepted: exactly one range, ``bytes=first-last``, ``bytes=first-`` or ``bytes=-suffix``
(unit case-insensitive; the range set is a list, so whitespace around it and empty list
elements are allowed, as RFC 9110 §5.6.1 requires). Numbers are ASCII digits, at
most :data:`MAX_DIGITS` of them (19: every int64), so no number a client writes costs more
than a compare. Refused as malformed: other units, several ranges, ``first > last``, signs,
spaces inside a number, more digits. A malformed or unsatisfiable Range is answered 416 with
``Content-Range: bytes */<size>`` (never ignored: a node that asked for a block must not get
the whole file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._types import Response

__all__ = ["MAX_DIGITS", "ByteRange", "RangeError", "block_range", "byte_span", "parse_range", "refused"]

MAX_DIGITS = 19
_RANGE_SPEC = re.compile(r"([0-9]{0,19})-([0-9]{0,19})")


class RangeError(ValueError):
    """A Range header that is malformed or cannot be satisfied."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """``first`` None: the last ``last`` bytes (suffix range); ``last`` None: to the end."""

    first: int | None
    last: int | None

    def span(self, size: int) -> tuple[int, int]:
        """(start, end) inclusive within a representation of ``size`` bytes, or RangeError."""
        if self.first is None:
            assert self.last is not None
            if self.last == 0 or size == 0:
                raise RangeError("unsatisfiable suffix range")
            return max(0, size - self.last), size - 1
        if self.first >= size:
            raise RangeError("range starts beyond the end")
        end = size - 1 if self.last is None else min(self.last, size - 1)
        return self.first, end

    def __str__(self) -> str:
        first = "" if self.first is None else str(self.first)
        last = "" if self.last is None else str(self.last)
        return f"bytes={first}-{last}"


def parse_range(spec: str) -> ByteRange:
    """One RFC 9110 byte range, or RangeError."""
    unit, eq, range_set = spec.strip(" \t").partition("=")
    if not eq or unit.lower() != "bytes":
        raise RangeError("expected a bytes range")
    elements = [e for e in (part.strip(" \t") for part in range_set.split(",")) if e]
    if len(elements) != 1:
        raise RangeError("expected exactly one range")
    m = _RANGE_SPEC.fullmatch(elements[0])
    if m is None:
        raise RangeError("expected one range: bytes=first-[last] or bytes=-suffix")
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        raise RangeError("empty range")
    first = int(first_s) if first_s else None
    last = int(last_s) if last_s else None
    if first is not None and last is not None and first > last:
        raise RangeError("range ends before it starts")
    return ByteRange(first, last)


def byte_span(spec: str | None, size: int) -> tuple[int, int] | None:
    """None without a Range header (answer 200), else the (start, end) to answer 206 with;
    RangeError when the handler must answer :func:`refused` (416)."""
    if spec is None:
        return None
    return parse_range(spec).span(size)


def refused(size: int) -> Response:
    return Response(416, [("Content-Range", f"bytes */{size}")])


def block_range(spec: str | None, block: int) -> str:
    """``spec`` narrowed to at most ``block`` bytes from where it starts (the MQTT adapter's clamp).

    No Range: the first block. A malformed Range is passed on unchanged, so the handler answers
    416 exactly as over HTTP. A suffix range longer than a block cannot be narrowed without
    the size: it becomes ``bytes=-0`` (416, and its Content-Range tells the node the size).
    """
    if spec is None:
        return f"bytes=0-{block - 1}"
    try:
        r = parse_range(spec)
    except RangeError:
        return spec
    if r.first is None:
        assert r.last is not None
        return str(r) if r.last <= block else "bytes=-0"
    # never past the largest number a range may spell (MAX_DIGITS), so the narrowed range parses too
    end = min(r.first + block - 1, 10**MAX_DIGITS - 1)
    if r.last is not None:
        end = min(end, r.last)
    return f"bytes={r.first}-{end}"
