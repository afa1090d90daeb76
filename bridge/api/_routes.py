"""The one routing table: every device and management endpoint, for every adapter."""

from __future__ import annotations

from . import _artifacts as art
from . import _auditlogs as audit
from . import _deployments as dep
from . import _devauth as auth
from . import _device_deployments as ddep
from . import _deviceconfig as dcfg
from . import _filters as filters
from . import _fleet_stats as fleet
from . import _fleet_summary as summary
from . import _inventory as inv
from . import _mesh_reports as mesh_reports
from . import _policies as pol
from . import _remote_access as remote
from . import _remote_diag as diag
from . import _remote_files as rfiles
from . import _roles as roles
from . import _rollouts as roll
from . import _useradm as users
from ._context import ApiContext
from ._routing import Route, Router
from ._types import Request, Response

__all__ = ["ROUTES", "build_router"]

_DEV = "/api/devices/v1"
_DEPLOY_DEV = "/api/devices/v1/deployments/device/deployments"
_MGMT_DEPLOY = "/api/management/v1/deployments"
_DEVAUTH = "/api/management/v2/devauth/devices"
_INV = "/api/management/v1/inventory"
_DEVCONF = "/api/management/v1/deviceconfig/configurations/device"
_INV2 = "/api/management/v2/inventory"
_USERADM = "/api/management/v1/useradm"
_DEVCONNECT = "/api/management/v1/deviceconnect/devices"


async def _chunk_map(ctx: ApiContext, req: Request) -> Response:
    from bridge.api._chunk_maps import get_chunk_map  # late: bridge.api._chunk_maps imports this package

    return await get_chunk_map(ctx, req)


async def _chunk_map_key(ctx: ApiContext, req: Request) -> Response:
    from bridge.api._chunk_maps import mgmt_chunk_map_key

    return await mgmt_chunk_map_key(ctx, req)


ROUTES: tuple[Route[ApiContext], ...] = (
    # -- device API -----------------------------------------------------------------------
    Route("POST", f"{_DEV}/authentication/auth_requests", auth.auth_requests),
    Route("PUT", f"{_DEV}/inventory/device/attributes", inv.device_attributes),
    Route("PATCH", f"{_DEV}/inventory/device/attributes", inv.device_attributes),
    Route("POST", "/api/devices/v2/deployments/device/deployments/next", ddep.next_deployment),
    Route("POST", f"{_DEPLOY_DEV}/next", ddep.next_deployment),
    Route("GET", f"{_DEPLOY_DEV}/next", ddep.next_deployment),
    Route("PUT", f"{_DEPLOY_DEV}/{{id}}/status", ddep.put_status),
    Route("PUT", f"{_DEPLOY_DEV}/{{id}}/log", ddep.put_log),
    Route("GET", f"{_DEV}/deployments/download/artifacts/{{id}}", ddep.download_artifact),
    Route("GET", "/api/meshota/v1/devices/chunk_maps/{id}", _chunk_map),  # meshota extension
    Route("POST", "/api/meshota/v1/devices/fleet_counts", fleet.fleet_counts),  # a root's count record
    Route("POST", "/api/meshota/v1/devices/mesh/report", mesh_reports.device_mesh_report),  # progress
    Route("GET", "/api/meshota/v1/devices/diagnostics/next", diag.device_next),  # remote diagnostics
    Route("PUT", "/api/meshota/v1/devices/diagnostics/{id}", diag.device_answer),
    Route("GET", f"{_DEV}/deviceconfig/configuration", dcfg.device_get_config),
    Route("PUT", f"{_DEV}/deviceconfig/configuration", dcfg.device_put_config),
    # -- public, read-only, no authentication: the fleet's statistics (off by default) --------
    Route("GET", "/stats/fleet", fleet.stats_page),
    Route("GET", "/stats/fleet/weekly.json", fleet.stats_json),
    Route("GET", "/stats/fleet/weekly.csv", fleet.stats_csv),
    # -- meshota management extension: the key nodes check chunk maps with ----------------
    Route("GET", "/api/meshota/v1/management/chunk_map_key", _chunk_map_key),  # meshota extension
    # -- meshota management extension: rollouts and fleet policies (docs/rollouts.md) ---------
    Route("GET", "/api/meshota/v1/management/rollouts/{id}", roll.mgmt_rollout),
    Route("POST", "/api/meshota/v1/management/rollouts/{id}/{action}", roll.mgmt_rollout_action),
    Route("GET", "/api/meshota/v1/management/policies/tenant", pol.mgmt_get_policy),
    Route("PUT", "/api/meshota/v1/management/policies/tenant", pol.mgmt_put_policy),
    Route("GET", "/api/meshota/v1/management/policies/groups/{name}", pol.mgmt_get_policy),
    Route("PUT", "/api/meshota/v1/management/policies/groups/{name}", pol.mgmt_put_policy),
    Route("DELETE", "/api/meshota/v1/management/policies/groups/{name}", pol.mgmt_delete_group_policy),
    # -- meshota management extension: aggregates for the admin UI (bridge/ui) ------------------
    Route("GET", "/api/meshota/v1/management/fleet/summary", summary.mgmt_fleet_summary),
    Route("GET", "/api/meshota/v1/management/devices/{id}/deployments", summary.mgmt_device_deployments),
    Route("GET", "/api/meshota/v1/management/mesh", summary.mgmt_mesh),
    # -- meshota management extension: remote access grants (docs/remote_access.md) -----------
    Route("GET", "/api/meshota/v1/management/remote_access/devices/{id}", remote.mgmt_get_grant),
    Route("PUT", "/api/meshota/v1/management/remote_access/devices/{id}", remote.mgmt_put_grant),
    Route("DELETE", "/api/meshota/v1/management/remote_access/devices/{id}", remote.mgmt_revoke_grant),
    Route("POST", "/api/meshota/v1/management/remote_access/devices/{id}/diagnostics", diag.mgmt_issue),
    Route("GET", "/api/meshota/v1/management/remote_access/devices/{id}/diagnostics", diag.mgmt_commands),
    # -- deviceconnect (Mender's HTTP side of it; the websockets: _deviceconnect.py) ------------
    Route("GET", f"{_DEVCONNECT}/{{id}}", rfiles.mgmt_connection),
    Route("GET", f"{_DEVCONNECT}/{{id}}/download", rfiles.mgmt_download),
    Route("PUT", f"{_DEVCONNECT}/{{id}}/upload", rfiles.mgmt_upload, max_body=rfiles.UPLOAD_BODY_MAX),
    # -- useradm ----------------------------------------------------------------------------
    Route("POST", "/api/management/v1/useradm/auth/login", users.login),
    Route("GET", "/api/management/v1/useradm/users", users.mgmt_users),
    Route("POST", "/api/management/v1/useradm/users", users.mgmt_create_user),
    Route("GET", "/api/management/v1/useradm/users/{id}", users.mgmt_user),
    Route("PUT", "/api/management/v1/useradm/users/{id}", users.mgmt_update_user),
    Route("DELETE", "/api/management/v1/useradm/users/{id}", users.mgmt_delete_user),
    Route("GET", f"{_USERADM}/roles", roles.mgmt_roles),
    Route("POST", f"{_USERADM}/roles", roles.mgmt_create_role),
    Route("GET", f"{_USERADM}/roles/{{name}}", roles.mgmt_role),
    Route("PUT", f"{_USERADM}/roles/{{name}}", roles.mgmt_update_role),
    Route("DELETE", f"{_USERADM}/roles/{{name}}", roles.mgmt_delete_role),
    Route("POST", f"{_USERADM}/settings/tokens", roles.mgmt_create_token),
    Route("GET", f"{_USERADM}/settings/tokens", roles.mgmt_tokens),
    Route("DELETE", f"{_USERADM}/settings/tokens/{{id}}", roles.mgmt_delete_token),
    # -- auditlogs --------------------------------------------------------------------------
    Route("GET", "/api/management/v1/auditlogs/logs", audit.mgmt_audit_logs),
    Route("GET", "/api/management/v1/auditlogs/logs/export", audit.mgmt_audit_export),
    # -- deployments: artifacts -------------------------------------------------------------
    Route("POST", f"{_MGMT_DEPLOY}/artifacts", art.mgmt_upload, streaming=True),
    Route("GET", f"{_MGMT_DEPLOY}/artifacts", art.mgmt_artifacts),
    Route("GET", f"{_MGMT_DEPLOY}/artifacts/{{id}}", art.mgmt_artifact),
    Route("DELETE", f"{_MGMT_DEPLOY}/artifacts/{{id}}", art.mgmt_delete_artifact),
    Route("GET", f"{_MGMT_DEPLOY}/artifacts/{{id}}/download", art.mgmt_download_link),
    # -- deployments ------------------------------------------------------------------------
    Route("POST", f"{_MGMT_DEPLOY}/deployments", dep.mgmt_create),
    Route("GET", f"{_MGMT_DEPLOY}/deployments", dep.mgmt_deployments),
    Route("POST", f"{_MGMT_DEPLOY}/deployments/group/{{name}}", dep.mgmt_create_for_group),
    Route("GET", f"{_MGMT_DEPLOY}/deployments/{{id}}", dep.mgmt_deployment),
    Route("PUT", f"{_MGMT_DEPLOY}/deployments/{{id}}/status", dep.mgmt_abort),
    Route("GET", f"{_MGMT_DEPLOY}/deployments/{{id}}/statistics", dep.mgmt_statistics),
    Route("GET", f"{_MGMT_DEPLOY}/deployments/{{id}}/devices", dep.mgmt_deployment_devices),
    Route("GET", f"{_MGMT_DEPLOY}/deployments/{{id}}/devices/{{device_id}}/log", dep.mgmt_device_log),
    # -- devauth v2 -------------------------------------------------------------------------
    Route("GET", _DEVAUTH, auth.mgmt_devices),
    Route("POST", _DEVAUTH, auth.mgmt_preauthorize),
    Route("GET", f"{_DEVAUTH}/{{id}}", auth.mgmt_device),
    Route("DELETE", f"{_DEVAUTH}/{{id}}", auth.mgmt_decommission),
    Route("PUT", f"{_DEVAUTH}/{{id}}/auth/{{aid}}/status", auth.mgmt_set_auth_status),
    Route("DELETE", f"{_DEVAUTH}/{{id}}/auth/{{aid}}", auth.mgmt_delete_auth_set),
    # -- deviceconfig -----------------------------------------------------------------------
    Route("GET", f"{_DEVCONF}/{{id}}", dcfg.mgmt_get_config),
    Route("PUT", f"{_DEVCONF}/{{id}}", dcfg.mgmt_set_config),
    Route("POST", f"{_DEVCONF}/{{id}}/deploy", dcfg.mgmt_deploy_config),
    # -- inventory --------------------------------------------------------------------------
    Route("GET", f"{_INV}/devices", inv.mgmt_inventory_devices),
    Route("GET", f"{_INV}/devices/{{id}}", inv.mgmt_inventory_device),
    Route("PUT", f"{_INV}/devices/{{id}}/group", inv.mgmt_set_group),
    Route("DELETE", f"{_INV}/devices/{{id}}/group/{{name}}", inv.mgmt_remove_from_group),
    Route("GET", f"{_INV}/groups", inv.mgmt_groups),
    Route("GET", f"{_INV}/groups/{{name}}/devices", inv.mgmt_group_devices),
    Route("PATCH", f"{_INV}/groups/{{name}}/devices", inv.mgmt_add_to_group),
    Route("DELETE", f"{_INV}/groups/{{name}}/devices", inv.mgmt_clear_group),
    Route("POST", "/api/management/v2/inventory/filters/search", inv.mgmt_search),
    Route("POST", f"{_INV2}/filters", filters.mgmt_create_filter),
    Route("GET", f"{_INV2}/filters", filters.mgmt_filters),
    Route("GET", f"{_INV2}/filters/{{id}}", filters.mgmt_filter),
    Route("DELETE", f"{_INV2}/filters/{{id}}", filters.mgmt_delete_filter),
)


def build_router(ctx: ApiContext) -> Router[ApiContext]:
    settings = ctx.settings
    return Router(
        ctx,
        ROUTES,
        body_limit=min(settings.max_json_body, settings.max_body),
        stream_limit=settings.max_body,
    )
