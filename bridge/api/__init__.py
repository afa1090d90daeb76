"""Device and management API as transport-free handlers behind one routing table.

An adapter (HTTP, MQTT) builds a :class:`Request`, calls ``await router.handle(request)`` and
renders the :class:`Response`. ``ApiError(status, message)`` becomes
``{"error": message, "request_id": ...}`` on whichever path the request came in.
"""

from ._artifacts import store_artifact, store_staged_artifact
from ._chunk_maps import deployment_public_key_pem
from ._context import ApiContext, Settings
from ._deployments import abort_deployment, create_deployment, group_devices
from ._devauth import decommission_device, set_auth_status
from ._device_deployments import check_log, check_status, report_status, store_log
from ._deviceconnect import is_websocket_route, serve_websocket
from ._fleet_stats import installation_facts
from ._inventory import set_group
from ._json import decode_json
from ._limits import ApiLimits
from ._policies import set_policy
from ._public_stats import publish, render_csv, render_json, render_page
from ._ranges import block_range
from ._rollout_ticker import rollout_ticker_service, run_ticker
from ._rollouts import RolloutSpec, parse_rollout, rollout_action, rollout_tick
from ._routes import ROUTES, build_router
from ._routing import Route, Router
from ._services import AdapterServices, Batch, BatchFailed, Claim
from ._types import ApiError, FileSlice, Request, Response, error_response, json_response
from ._useradm import create_user

__all__ = [
    "ROUTES",
    "AdapterServices",
    "ApiContext",
    "ApiError",
    "ApiLimits",
    "Batch",
    "BatchFailed",
    "Claim",
    "FileSlice",
    "Request",
    "Response",
    "RolloutSpec",
    "Route",
    "Router",
    "Settings",
    "abort_deployment",
    "block_range",
    "build_router",
    "check_log",
    "check_status",
    "create_deployment",
    "create_user",
    "decode_json",
    "decommission_device",
    "deployment_public_key_pem",
    "error_response",
    "group_devices",
    "installation_facts",
    "is_websocket_route",
    "json_response",
    "parse_rollout",
    "publish",
    "render_csv",
    "render_json",
    "render_page",
    "report_status",
    "rollout_action",
    "rollout_tick",
    "rollout_ticker_service",
    "run_ticker",
    "serve_websocket",
    "set_auth_status",
    "set_group",
    "set_policy",
    "store_artifact",
    "store_log",
    "store_staged_artifact",
]
