"""Deployments, management side: create (devices or group), list, show, statistics, abort."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.service import Denied, UnitOfWork
from bridge.store import gov_tables as g
from bridge.store import rollout_tables
from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext, now
from ._device_deployments import refresh_deployment
from ._inventory import matching_devices
from ._paging import paginate
from ._rollouts import RolloutSpec, create_rollout, parse_rollout, rollout_json
from ._scope import check_devices, visible_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "abort_deployment",
    "create_deployment",
    "mgmt_abort",
    "mgmt_create",
    "mgmt_create_for_group",
    "mgmt_deployment",
    "mgmt_deployment_devices",
    "mgmt_deployments",
    "mgmt_device_log",
    "mgmt_statistics",
]

_STAT_KEYS = (
    "success",
    "pending",
    "downloading",
    "rebooting",
    "installing",
    "failure",
    "noartifact",
    "already-installed",
    "aborted",
    "pause_before_installing",
    "pause_before_rebooting",
    "pause_before_committing",
    "decommissioned",
)


async def create_deployment(
    conn: AsyncConnection,
    *,
    name: str,
    artifact_name: str,
    device_ids: list[str],
    group: str | None = None,
    force: bool = False,
    rollout: RolloutSpec | None = None,
    wall_clock: float | None = None,
) -> str:
    """Service-layer creation, shared by the management API and ``meshota admin deploy``."""
    if not name or not artifact_name:
        raise ApiError(400, "name and artifact_name are required")
    if not device_ids:
        raise ApiError(400, "a deployment needs at least one device")
    artifact = (
        await conn.execute(sa.select(t.artifacts.c.id).where(t.artifacts.c.name == artifact_name))
    ).first()
    if artifact is None:
        raise ApiError(422, f"no artifact named {artifact_name!r}")
    ids = list(dict.fromkeys(device_ids))
    known = set((await conn.execute(sa.select(t.devices.c.id).where(t.devices.c.id.in_(ids)))).scalars())
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ApiError(400, f"unknown devices: {', '.join(unknown[:10])}")
    ts = now()
    deployment_id = str(uuid.uuid4())
    await conn.execute(
        sa.insert(t.deployments).values(
            id=deployment_id,
            name=name,
            artifact_name=artifact_name,
            status="pending",
            force_installation=force,
            group_name=group,
            device_count=len(ids),
            created_ts=ts,
        )
    )
    await conn.execute(
        sa.insert(t.device_deployments),
        [
            {
                "id": str(uuid.uuid4()),
                "deployment_id": deployment_id,
                "device_id": device_id,
                "status": "pending",
                "created_ts": ts,
            }
            for device_id in ids
        ],
    )
    if rollout is not None:
        # phase start times are wall-clock times (ApiContext.clock; the simulator's is virtual)
        await create_rollout(conn, deployment_id, ids, rollout, ts if wall_clock is None else wall_clock)
    return deployment_id


async def abort_deployment(conn: AsyncConnection, deployment_id: str) -> None:
    row = (
        await conn.execute(sa.select(t.deployments.c.status).where(t.deployments.c.id == deployment_id))
    ).first()
    if row is None:
        raise ApiError(404, "deployment not found")
    if row.status == "finished":
        raise ApiError(422, "deployment already finished")
    dd = t.device_deployments
    await conn.execute(
        sa.update(dd)
        .where(dd.c.deployment_id == deployment_id, dd.c.finished_ts.is_(None))
        .values(status="aborted", finished_ts=now())
    )
    ro = rollout_tables.rollouts  # Mender's abort also ends a phased rollout (the ticker leaves it)
    await conn.execute(
        sa.update(ro)
        .where(ro.c.deployment_id == deployment_id, ro.c.state.not_in(("aborted", "done")))
        .values(state="aborted", reason="deployment aborted", updated_ts=now())
    )
    await refresh_deployment(conn, deployment_id)


def _body(req: Request) -> tuple[dict[str, Any], RolloutSpec | None]:
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    for key in ("name", "artifact_name"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(400, f"{key} must be a non-empty string")
    force = body.get("force_installation", False)
    if not isinstance(force, bool):
        raise ApiError(400, "force_installation must be a boolean")
    return body, parse_rollout(body)  # phases, retries, gates, install: validated before any write


def _created(deployment_id: str) -> Response:
    return Response(201, [("Location", f"/api/management/v1/deployments/deployments/{deployment_id}")])


async def mgmt_create(ctx: ApiContext, req: Request) -> Response:
    """Devices by id, ``all_devices``, or ``filter_id`` (a saved filter: a dynamic group, whose
    members at this moment become the deployment's devices)."""
    p = await require_user(ctx, req)
    body, rollout = _body(req)
    devices = body.get("devices")
    filter_id = body.get("filter_id")
    every = body.get("all_devices") is True
    # "every device" is beyond a group-limited role
    async with ctx.gov.unit(p, "deployments:manage", groups=() if every else None) as uow:
        conn = uow.conn
        if every:
            devices = list(
                (
                    await conn.execute(sa.select(t.devices.c.id).where(t.devices.c.status == "accepted"))
                ).scalars()
            )
        elif isinstance(filter_id, str):
            terms = (
                await conn.execute(
                    sa.select(g.saved_filters.c.terms).where(g.saved_filters.c.id == filter_id)
                )
            ).scalar()
            if terms is None:
                raise ApiError(400, f"no saved filter {filter_id!r}")
            devices = await matching_devices(uow, terms)  # within the grant's reach
        elif not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise ApiError(400, "devices must be an array of device ids (or all_devices, or filter_id)")
        else:
            await check_devices(uow, devices, "unknown devices")
        deployment_id = await create_deployment(
            conn,
            name=body["name"],
            artifact_name=body["artifact_name"],
            device_ids=devices,
            force=body.get("force_installation", False),
            rollout=rollout,
            wall_clock=ctx.clock(),
        )
        await uow.audit(
            "deployment.create",
            "deployment",
            deployment_id,
            {
                "name": body["name"],
                "artifact_name": body["artifact_name"],
                "devices": len(set(devices)),
                "filter_id": filter_id,
            },
        )
    return _created(deployment_id)


async def group_devices(conn: AsyncConnection, group: str) -> list[str]:
    rows = await conn.execute(
        sa.select(t.inventory.c.device_id, t.inventory.c.value).where(
            t.inventory.c.scope == "system", t.inventory.c.name == "group"
        )
    )
    return sorted(r.device_id for r in rows if r.value == group)


async def mgmt_create_for_group(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body, rollout = _body(req)
    group = req.path_params["name"]
    async with ctx.gov.unit(p, "deployments:manage", groups=[group]) as uow:
        conn = uow.conn
        members = await group_devices(conn, group)
        if not members:
            raise ApiError(404, f"group {group!r} has no devices")
        # a static group becomes a fixed device list when the deployment is created
        deployment_id = await create_deployment(
            conn,
            name=body["name"],
            artifact_name=body["artifact_name"],
            device_ids=members,
            group=group,
            force=body.get("force_installation", False),
            rollout=rollout,
            wall_clock=ctx.clock(),
        )
        await uow.audit(
            "deployment.create",
            "deployment",
            deployment_id,
            {
                "name": body["name"],
                "artifact_name": body["artifact_name"],
                "group": group,
                "devices": len(members),
            },
        )
    return _created(deployment_id)


async def _deployment_json(conn: AsyncConnection, row: Any) -> dict[str, Any]:
    artifact_ids = list(
        (
            await conn.execute(sa.select(t.artifacts.c.id).where(t.artifacts.c.name == row.artifact_name))
        ).scalars()
    )
    out: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "artifact_name": row.artifact_name,
        "created": rfc3339(row.created_ts),
        "status": row.status,
        "device_count": row.device_count,
        "artifacts": artifact_ids,
        "type": "software",
    }
    if row.finished_ts is not None:
        out["finished"] = rfc3339(row.finished_ts)
    if row.group_name is not None:
        out["groups"] = [row.group_name]
    rollout = await rollout_json(conn, row.id)
    if rollout is not None:  # Mender's phases/retries, and meshota's rollout state beside them
        out["phases"] = rollout["phases"]
        out["retries"] = rollout["retries"]
        out["meshota_rollout"] = {k: v for k, v in rollout.items() if k not in ("phases", "retries")}
    return out


async def _hidden(uow: UnitOfWork) -> Any | None:
    """Deployments out of a group-limited grant's reach (any device out of reach), as a subquery."""
    visible = await visible_devices(uow)
    if visible is None:
        return None
    dd = t.device_deployments
    return sa.select(dd.c.deployment_id).where(dd.c.device_id.not_in(sorted(visible))).distinct()


async def check_deployment(uow: UnitOfWork, deployment_id: str) -> None:
    hidden = await _hidden(uow)
    if hidden is not None:
        found = await uow.conn.execute(hidden.where(t.device_deployments.c.deployment_id == deployment_id))
        if found.first() is not None:
            raise Denied("deployment not found", 404)


async def mgmt_deployments(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    page, per_page = paginate(req, default=20, maximum=500)
    query = sa.select(t.deployments).order_by(t.deployments.c.created_ts.desc(), t.deployments.c.id)
    status = req.query_one("status")
    if status is not None:
        if status not in ("pending", "inprogress", "finished"):
            raise ApiError(400, f"invalid status filter {status!r}")
        query = query.where(t.deployments.c.status == status)
    search = req.query_one("search")
    if search:
        query = query.where(t.deployments.c.name.contains(search, autoescape=True))
    async with ctx.gov.read(p, "deployments:read") as uow:
        conn = uow.conn
        hidden = await _hidden(uow)
        if hidden is not None:
            query = query.where(t.deployments.c.id.not_in(hidden))
        total = len(list(await conn.execute(query)))
        rows = list(await conn.execute(query.offset((page - 1) * per_page).limit(per_page)))
        body = [await _deployment_json(conn, r) for r in rows]
    return json_response(200, body, [("X-Total-Count", str(total))])


async def _get(conn: AsyncConnection, deployment_id: str) -> Any:
    row = (await conn.execute(sa.select(t.deployments).where(t.deployments.c.id == deployment_id))).first()
    if row is None:
        raise ApiError(404, "deployment not found")
    return row


async def mgmt_deployment(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "deployments:read") as uow:
        conn = uow.conn
        await check_deployment(uow, req.path_params["id"])
        return json_response(200, await _deployment_json(conn, await _get(conn, req.path_params["id"])))


async def mgmt_statistics(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    dd = t.device_deployments
    async with ctx.gov.read(p, "deployments:read") as uow:
        conn = uow.conn
        await check_deployment(uow, req.path_params["id"])
        await _get(conn, req.path_params["id"])
        rows = await conn.execute(
            sa.select(dd.c.status, sa.func.count())
            .where(dd.c.deployment_id == req.path_params["id"])
            .group_by(dd.c.status)
        )
        counts = dict.fromkeys(_STAT_KEYS, 0)
        counts.update({r[0]: int(r[1]) for r in rows})
    return json_response(200, counts)


async def mgmt_deployment_devices(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    dd = t.device_deployments
    async with ctx.gov.read(p, "deployments:read") as uow:
        conn = uow.conn
        await check_deployment(uow, req.path_params["id"])
        await _get(conn, req.path_params["id"])
        rows = await conn.execute(
            sa.select(dd).where(dd.c.deployment_id == req.path_params["id"]).order_by(dd.c.device_id)
        )
        body = []
        for r in rows:
            item: dict[str, Any] = {
                "id": r.device_id,
                "status": r.status,
                "created": rfc3339(r.created_ts),
                "log": r.log is not None,
                "state": r.status,
            }
            if r.finished_ts is not None:
                item["finished"] = rfc3339(r.finished_ts)
            if r.substate:
                item["substate"] = r.substate
            body.append(item)
    return json_response(200, body)


async def mgmt_device_log(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    dd = t.device_deployments
    async with ctx.gov.read(p, "deployments:read") as uow:
        conn = uow.conn
        await check_devices(uow, [req.path_params["device_id"]], "no log for this device in this deployment")
        row = (
            await conn.execute(
                sa.select(dd.c.log).where(
                    dd.c.deployment_id == req.path_params["id"],
                    dd.c.device_id == req.path_params["device_id"],
                )
            )
        ).first()
    if row is None or row.log is None:
        raise ApiError(404, "no log for this device in this deployment")
    text = "".join(f"{m['timestamp']} {m['level']}: {m['message']}\n" for m in row.log)
    return Response(200, [("Content-Type", "text/plain")], text.encode())


async def mgmt_abort(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict) or body.get("status") != "aborted":
        raise ApiError(400, 'body must be {"status": "aborted"}')
    async with ctx.gov.unit(p, "deployments:manage") as uow:
        await check_deployment(uow, req.path_params["id"])
        await abort_deployment(uow.conn, req.path_params["id"])
        await uow.audit("deployment.abort", "deployment", req.path_params["id"])
    return Response(204)
