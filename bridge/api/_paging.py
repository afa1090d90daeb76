"""page / per_page query parameters."""

from __future__ import annotations

from ._types import ApiError, Request

__all__ = ["paginate"]


def paginate(req: Request, *, default: int, maximum: int) -> tuple[int, int]:
    try:
        page = int(req.query_one("page") or 1)
        per_page = int(req.query_one("per_page") or default)
    except ValueError:
        raise ApiError(400, "page and per_page must be integers") from None
    if page < 1 or per_page < 1:
        raise ApiError(400, "page and per_page must be positive")
    if per_page > maximum:
        raise ApiError(400, f"per_page must be at most {maximum}")
    return page, per_page
