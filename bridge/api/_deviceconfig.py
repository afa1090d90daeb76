"""Device configuration (Mender deviceconfig): what the operator configured, what the device reports.

Device API: ``GET /api/devices/v1/deviceconfig/configuration`` (the configured map) and ``PUT``
(the device reports what it applied). Management API: ``GET``/``PUT
/api/management/v1/deviceconfig/configurations/device/{id}`` and ``POST .../deploy``. Both maps are
flat string -> string objects (the spec's ``additionalProperties: {type: string}``), bounded by
``ApiLimits.config_*``. ``deploy`` stamps a new ``deployment_id`` on the configuration; the device
picks the configured map up with its next ``GET`` (meshota generates no configuration artifact,
docs/api.md).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from bridge.store import rollout_tables as rt
from bridge.store import tables as t

from ._auth import require_device, require_user
from ._context import ApiContext, now
from ._limits import ApiLimits, check_body_size
from ._scope import check_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "device_get_config",
    "device_put_config",
    "mgmt_deploy_config",
    "mgmt_get_config",
    "mgmt_set_config",
]

_C = rt.device_configs


def _config(body: Any, lim: ApiLimits) -> dict[str, str]:
    if not isinstance(body, dict):
        raise ApiError(400, "a configuration must be a JSON object of string values")
    if len(body) > lim.config_max_keys:
        raise ApiError(400, f"{len(body)} configuration keys; at most {lim.config_max_keys} are allowed")
    for key, value in body.items():
        if not key or len(key) > lim.config_key_max:
            raise ApiError(400, f"configuration keys are 1..{lim.config_key_max} characters")
        if not isinstance(value, str):
            raise ApiError(400, f"configuration value of {key!r} must be a string")
        if len(value) > lim.config_value_max:
            raise ApiError(400, f"configuration value of {key!r} exceeds {lim.config_value_max} characters")
    return dict(body)


async def _row(conn: Any, device_id: str) -> Any:
    return (await conn.execute(sa.select(_C).where(_C.c.device_id == device_id))).first()


async def _upsert(conn: Any, device_id: str, **values: Any) -> None:
    if await _row(conn, device_id) is None:
        base: dict[str, Any] = {"configured": {}, "reported": {}}
        await conn.execute(sa.insert(_C).values(device_id=device_id, **{**base, **values}))
    else:
        await conn.execute(sa.update(_C).where(_C.c.device_id == device_id).values(**values))


async def _device_exists(conn: Any, device_id: str) -> None:
    found = (await conn.execute(sa.select(t.devices.c.id).where(t.devices.c.id == device_id))).first()
    if found is None:
        raise ApiError(404, "device not found")


# -- device API ----------------------------------------------------------------------------------
async def device_get_config(ctx: ApiContext, req: Request) -> Response:
    auth = await require_device(ctx, req)
    async with ctx.store.read() as conn:
        row = await _row(conn, auth.device_id)
    return json_response(200, dict(row.configured) if row is not None else {})


async def device_put_config(ctx: ApiContext, req: Request) -> Response:
    check_body_size(req.body, ctx.limits.config_body_max, "configuration")
    auth = await require_device(ctx, req)
    reported = _config(req.json(), ctx.limits)
    async with ctx.store.transaction() as conn:
        await _upsert(conn, auth.device_id, reported=reported, reported_ts=now())
    return Response(204)


# -- management API ------------------------------------------------------------------------------
async def mgmt_get_config(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.read(p, "deviceconfig:read") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        await _device_exists(conn, device_id)
        row = await _row(conn, device_id)
    out: dict[str, Any] = {"id": device_id, "configured": {}, "reported": {}}
    if row is not None:
        out["configured"] = dict(row.configured)
        out["reported"] = dict(row.reported)
        if row.deployment_id is not None:
            out["deployment_id"] = row.deployment_id
        for key, ts in (("reported_ts", row.reported_ts), ("updated_ts", row.updated_ts)):
            if ts is not None:
                out[key] = rfc3339(ts)
    return json_response(200, out)


async def mgmt_set_config(ctx: ApiContext, req: Request) -> Response:
    check_body_size(req.body, ctx.limits.config_body_max, "configuration")
    p = await require_user(ctx, req)
    configured = _config(req.json(), ctx.limits)
    device_id = req.path_params["id"]
    async with ctx.gov.unit(p, "deviceconfig:manage") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        await _device_exists(conn, device_id)
        await _upsert(conn, device_id, configured=configured, updated_ts=now())
        await uow.audit("device.configure", "device", device_id, {"keys": sorted(configured)[:50]})
    return Response(204)


async def mgmt_deploy_config(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    retries = body.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
        raise ApiError(400, "retries must be an integer in 0..100")
    ucm = body.get("update_control_map")
    if ucm is not None and not isinstance(ucm, dict):
        raise ApiError(400, "update_control_map must be an object")
    device_id = req.path_params["id"]
    deployment_id = str(uuid.uuid4())
    async with ctx.gov.unit(p, "deviceconfig:manage") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        await _device_exists(conn, device_id)
        row = await _row(conn, device_id)
        if row is None or not row.configured:
            raise ApiError(400, "the device has no configuration to deploy")
        await _upsert(conn, device_id, deployment_id=deployment_id, updated_ts=now())
        await uow.audit("device.configure_deploy", "device", device_id, {"deployment_id": deployment_id})
    return json_response(200, {"deployment_id": deployment_id})
