"""Air-gapped sites: signed, expiring thick bundles checked like TUF (docs/bundles.md).

A deployment bundle carries the artifacts and what goes where (``bundle.json``) with TUF
metadata signed by offline/online keys (python-tuf, securesystemslib); a site verifies it against
its pinned root, imports it through the server's service layer, and sends a signed status bundle
back the same way.

The server side (``ImportLog``, ``ImportPlan``, ``server_context``: bridge and its store) loads
on first use, so signing and ``verify`` need no server code in memory.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._archive import ArchiveLimits
from ._errors import BundleError, BundleUsageError
from ._ops import (
    ExportResult,
    export_bundle,
    import_bundle,
    parse_duration,
    parse_since,
    status_export,
    status_import,
    verify_bundle,
)
from ._repo import SigningRepo
from ._verify import pin_root, trusted_versions, verify

if _TYPE_CHECKING:
    from ._server import ImportLog, ImportPlan, server_context

_SERVER_SIDE = ("ImportLog", "ImportPlan", "server_context")


def __getattr__(name: str) -> _Any:
    if name in _SERVER_SIDE:
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArchiveLimits",
    "BundleError",
    "BundleUsageError",
    "ExportResult",
    "ImportLog",
    "ImportPlan",
    "SigningRepo",
    "export_bundle",
    "import_bundle",
    "parse_duration",
    "parse_since",
    "pin_root",
    "server_context",
    "status_export",
    "status_import",
    "trusted_versions",
    "verify",
    "verify_bundle",
]
