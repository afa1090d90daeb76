"""The one error a bundle operation raises: a one-line reason, and the exit status it maps to.

::

    BundleError              refused: the bundle, archive or status is not acceptable (exit 1)
    └── BundleUsageError     the operator's input (a path, a key directory, an option) is wrong (exit 2)
"""

from __future__ import annotations

__all__ = ["BundleError", "BundleUsageError"]


class BundleError(Exception):
    """Refused, with a one-line reason; nothing was imported or written."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class BundleUsageError(BundleError):
    """A usage or configuration error (a missing key directory, a bad --expires)."""

    exit_code = 2
