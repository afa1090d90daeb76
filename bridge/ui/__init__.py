"""The web admin UI under ``/ui/`` (issue 17): server-rendered pages over the management API.

:func:`build_ui` returns a :class:`bridge.api.Router` of the UI's own routes; the HTTP adapter
sends every ``/ui/...`` request to it. Each page and action calls the management API's routing
table in process with the user's token (bridge/ui/_core.py), so permissions, tenant scope and
audit are the API's. docs/ui.md describes the pages.
"""

from bridge.api import ApiContext, Route, Router

from . import _admin as admin
from . import _fleet as fleet
from . import _pages as pages
from . import _releases as rel
from ._core import COOKIE, Ui

__all__ = ["COOKIE", "UI_ROUTES", "Ui", "build_ui"]

UI_ROUTES: tuple[Route[Ui], ...] = (
    Route("GET", "/ui/", fleet.dashboard),
    Route("GET", "/ui/login", pages.login_form),
    Route("POST", "/ui/login", pages.login_submit),
    Route("POST", "/ui/logout", pages.logout),
    Route("GET", "/ui/static/{name}", pages.static),
    Route("GET", "/ui/devices", fleet.devices),
    Route("GET", "/ui/devices/{id}", fleet.device),
    Route("POST", "/ui/devices/{id}/{action}", fleet.device_action),
    Route("POST", "/ui/filters", fleet.filter_create),
    Route("GET", "/ui/mesh", fleet.mesh),
    Route("GET", "/ui/artifacts", rel.artifacts),
    Route("POST", "/ui/artifacts", rel.upload, streaming=True),
    Route("POST", "/ui/artifacts/{id}/delete", rel.artifact_delete),
    Route("GET", "/ui/deployments", rel.deployments),
    Route("POST", "/ui/deployments", rel.deployment_create),
    Route("GET", "/ui/deployments/new", rel.deployment_new),
    Route("GET", "/ui/deployments/{id}", rel.deployment),
    Route("GET", "/ui/deployments/{id}/progress", rel.deployment_progress),
    Route("POST", "/ui/deployments/{id}/{action}", rel.deployment_action),
    Route("GET", "/ui/deployments/{id}/devices/{device_id}/log", rel.deployment_log),
    Route("GET", "/ui/audit", admin.audit),
    Route("GET", "/ui/audit/export.csv", admin.audit_csv),
    Route("GET", "/ui/users", admin.users),
    Route("POST", "/ui/users", admin.user_create),
    Route("POST", "/ui/users/{id}/delete", admin.user_delete),
    Route("POST", "/ui/roles", admin.role_create),
    Route("POST", "/ui/tokens", admin.token_create),
    Route("POST", "/ui/tokens/{id}/revoke", admin.token_revoke),
)


def build_ui(api: Router[ApiContext]) -> Router[Ui]:
    """The UI's router over ``api`` (form bodies: 64 KiB; the artifact upload streams on)."""
    return Router(Ui(api), UI_ROUTES, body_limit=64 * 1024, stream_limit=api.stream_limit)
