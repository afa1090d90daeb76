"""Air-gapped sites: signed, expiring thick bundles checked like TUF (docs/bundles.md).

A deployment bundle carries the artifacts and what goes where (``bundle.json``) with TUF
metadata signed by offline/online keys (python-tuf, securesystemslib); a site verifies it against
its pinned root, imports it through the server's service layer, and sends a signed status bundle
back the same way.
"""

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
from ._server import ImportLog, ImportPlan, server_context
from ._verify import pin_root, trusted_versions, verify

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
