"""The client-visible error every handler raises (re-exported by ``bridge.api``)."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """A client-visible failure; renders as ``{"error": message, "request_id": ...}``.

    ``headers`` go out with the error response (e.g. ``Retry-After`` on a 429)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers or [])
