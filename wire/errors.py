"""The one root of the errors that wire decoders raise on a peer's bad bytes.

See the tree in :mod:`wire`'s docstring. :class:`WireError` is a :class:`ValueError`, so code that
catches ``ValueError`` around a decoder keeps working.
"""

from __future__ import annotations

__all__ = ["WireError"]


class WireError(ValueError):
    """Bytes (or a file) that are not what the node <-> server contract says (the peer's fault)."""
