"""The one JSON decoder every route uses (``Request.json()``): size, nesting depth and content
checked before or while decoding, every failure an :class:`ApiError` (400/413), never a 5xx.

Why each check exists:

- size: a body is already bounded by its route's limit; this bounds JSON held elsewhere
  (e.g. the ``id_data`` string inside an auth request) the same way.
- depth: ``json.loads`` recurses per level; ~1,000 levels raise RecursionError, and anything
  deeper than a few levels is never a Mender document. Counted on the raw text (strings
  skipped) before decoding, so nothing deep is ever built.
- numbers: ``1e400`` decodes to ``inf`` and ``NaN``/``Infinity`` are accepted by Python but are
  not JSON (PostgreSQL refuses them); integers over 4,300 digits raise ValueError.
- strings: ``\\u0000`` and unpaired surrogates decode but cannot be stored (PostgreSQL text/jsonb,
  UTF-8) — refused here instead of failing in the database.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ._errors import ApiError

__all__ = ["INLINE_JSON_SIZE", "MAX_JSON_DEPTH", "MAX_JSON_SIZE", "decode_json", "nests_deeper"]

MAX_JSON_DEPTH = 32
MAX_JSON_SIZE = 1 << 20
# bodies up to this size are decoded on the event loop (~ms); larger ones in a thread (Router)
INLINE_JSON_SIZE = 16 << 10

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"[\[{][\]}]")
# \u0000 preceded by an even number of backslashes (an odd number escapes the backslash itself)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def nests_deeper(data: bytes, levels: int) -> bool:
    """Whether the arrays/objects in ``data`` nest deeper than ``levels`` (brackets inside
    strings do not count). Each pass drops the innermost pairs, so at most ``levels`` C-speed
    passes; unbalanced brackets also count as too deep (the decoder would refuse them anyway)."""
    if data.count(b"[") + data.count(b"{") <= levels:
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    for _ in range(levels):
        if not brackets:
            return False
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def decode_json(
    data: bytes, *, what: str = "body", max_size: int = MAX_JSON_SIZE, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``data`` decoded, or ApiError: 413 over ``max_size`` bytes, 400 for anything else wrong."""
    if len(data) > max_size:
        raise ApiError(413, f"JSON {what} exceeds {max_size} bytes")
    if nests_deeper(data, max_depth):
        raise ApiError(400, f"JSON {what} nests deeper than {max_depth} levels")
    if _NUL_ESCAPE.search(data):
        raise ApiError(400, f"JSON {what} contains a NUL character")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        if _SURROGATE_ESCAPE.search(data):
            # pairs decode to one character; a lone surrogate cannot be encoded (or stored)
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, RecursionError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"malformed JSON {what}: {str(exc)[:200]}") from None
    return value
