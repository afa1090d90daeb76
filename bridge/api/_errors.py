"""The client-visible error every handler raises (re-exported by ``bridge.api``)."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """A client-visible failure; renders as ``{"error": message, "request_id": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
