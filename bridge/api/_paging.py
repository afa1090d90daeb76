"""page / per_page (query parameters, or JSON fields in a search body) and other integer inputs.

Strict: ASCII digits only (no sign, spaces, underscores or other scripts' digits, which
``int()`` would accept), at most 9 of them, and a range check, so nothing reaches SQL
OFFSET/LIMIT that the database cannot hold. Anything else is a 400 naming the parameter.
"""

from __future__ import annotations

import re

from ._errors import ApiError
from ._types import Request

__all__ = ["MAX_PAGE", "paginate", "parse_int", "query_int"]

MAX_PAGE = 1_000_000
_DIGITS = re.compile(r"[0-9]{1,9}")


def parse_int(raw: object, name: str, *, minimum: int, maximum: int) -> int:
    """``raw`` (a query string or a JSON value) as an int in ``minimum..maximum``, else 400."""
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _DIGITS.fullmatch(raw):
        value = int(raw)
    if value is None or not minimum <= value <= maximum:
        raise ApiError(400, f"{name} must be an integer in {minimum}..{maximum}")
    return value


def query_int(req: Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = req.query_one(name)
    if raw is None or raw == "":
        return default
    return parse_int(raw, name, minimum=minimum, maximum=maximum)


def paginate(req: Request, *, default: int, maximum: int) -> tuple[int, int]:
    page = query_int(req, "page", 1, minimum=1, maximum=MAX_PAGE)
    per_page = query_int(req, "per_page", default, minimum=1, maximum=maximum)
    return page, per_page
