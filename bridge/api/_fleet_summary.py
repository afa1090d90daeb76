"""Aggregates the admin UI (bridge/ui) and any other client read in one call (meshota extensions).

    GET /api/meshota/v1/management/fleet/summary          devices:read
    GET /api/meshota/v1/management/devices/{id}/deployments   deployments:read
    GET /api/meshota/v1/management/mesh                    devices:read

Counted in SQL (GROUP BY), never by loading the fleet: the dashboard of 10,000 devices is a few
small queries. A group-limited role counts only the devices its groups reach.

``offline``: accepted devices not heard from (authentication, inventory) for ``offline_after``
seconds (query parameter, default 24 h).

The mesh view is what the server knows: relays report no topology, chunk progress or airtime to
the server today, so a sub-mesh is an inventory group (the unit a group phase streams to, see
docs/group-ota.md) and a node's progress is its device deployment status.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext, now
from ._mesh_reports import reports_view
from ._paging import query_int
from ._scope import check_devices, visible_devices
from ._times import rfc3339
from ._types import Request, Response, json_response

__all__ = ["mgmt_device_deployments", "mgmt_fleet_summary", "mgmt_mesh"]

_D, _I, _DD, _DEP = t.devices, t.inventory, t.device_deployments, t.deployments
_TOP = 20
_MESH_NODES = 200  # nodes listed per sub-mesh (counts cover them all)


def _json_text(raw: object) -> str:
    """An inventory value's JSON text as shown: a string as itself, anything else as JSON."""
    try:
        value = json.loads(str(raw))
    except ValueError:
        return str(raw)
    return value if isinstance(value, str) else json.dumps(value)


def _scoped(stmt: Any, column: Any, visible: set[str] | None) -> Any:
    return stmt if visible is None else stmt.where(column.in_(sorted(visible)))


async def mgmt_fleet_summary(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    offline_after = query_int(req, "offline_after", 86400, minimum=60, maximum=365 * 86400)
    cutoff = now() - offline_after
    async with ctx.gov.read(p, "devices:read") as uow:
        conn = uow.conn
        visible = await visible_devices(uow)
        by_status = {
            r[0]: r[1]
            for r in await conn.execute(
                _scoped(sa.select(_D.c.status, sa.func.count()), _D.c.id, visible).group_by(_D.c.status)
            )
        }
        offline = (
            await conn.execute(
                _scoped(
                    sa.select(sa.func.count()).where(_D.c.status == "accepted", _D.c.updated_ts < cutoff),
                    _D.c.id,
                    visible,
                )
            )
        ).scalar_one()
        # grouped by the JSON text (PostgreSQL's json type has no equality), decoded here
        as_text = sa.cast(_I.c.value, sa.Text)
        version_q = _scoped(
            sa.select(as_text, sa.func.count()).where(
                _I.c.scope == "inventory", _I.c.name == "artifact_name"
            ),
            _I.c.device_id,
            visible,
        ).group_by(as_text)
        counted: dict[str, int] = {}
        for v, n in await conn.execute(version_q):
            name = _json_text(v)
            counted[name] = counted.get(name, 0) + n
        versions = sorted(counted.items(), key=lambda x: (-x[1], x[0]))
        failed_q = _scoped(
            sa.select(sa.func.count()).where(
                _DD.c.status == "failure", _DD.c.finished_ts >= now() - 7 * 86400
            ),
            _DD.c.device_id,
            visible,
        )
        failures_7d = (await conn.execute(failed_q)).scalar_one()
    return json_response(
        200,
        {
            "devices": {
                "accepted": by_status.get("accepted", 0),
                "pending": by_status.get("pending", 0),
                "rejected": by_status.get("rejected", 0),
                "preauthorized": by_status.get("preauthorized", 0),
                "noauth": by_status.get("noauth", 0),
                "offline": offline,
                "total": sum(by_status.values()),
            },
            "offline_after": offline_after,
            "versions": [{"artifact_name": v, "devices": n} for v, n in versions[:_TOP]],
            "versions_total": len(versions),
            "failures_7d": failures_7d,
        },
    )


async def mgmt_device_deployments(ctx: ApiContext, req: Request) -> Response:
    """A device's deployment history, newest first (at most ``per_page``, default 20)."""
    p = await require_user(ctx, req)
    per_page = query_int(req, "per_page", 20, minimum=1, maximum=100)
    device_id = req.path_params["id"]
    async with ctx.gov.read(p, "deployments:read") as uow:
        await check_devices(uow, [device_id])
        rows = await uow.conn.execute(
            sa.select(_DD, _DEP.c.name, _DEP.c.artifact_name)
            .join(_DEP, _DEP.c.id == _DD.c.deployment_id)
            .where(_DD.c.device_id == device_id)
            .order_by(_DD.c.created_ts.desc())
            .limit(per_page)
        )
        body = [
            {
                "deployment_id": r.deployment_id,
                "name": r.name,
                "artifact_name": r.artifact_name,
                "status": r.status,
                "substate": r.substate,
                "created_ts": rfc3339(r.created_ts),
                "finished_ts": rfc3339(r.finished_ts) if r.finished_ts else None,
            }
            for r in rows
        ]
    return json_response(200, body)


async def mgmt_mesh(ctx: ApiContext, req: Request) -> Response:
    """Sub-meshes (inventory groups) and their nodes with each node's newest deployment status."""
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "devices:read") as uow:
        conn = uow.conn
        visible = await visible_devices(uow)
        groups: dict[str, list[str]] = {}
        q = _scoped(
            sa.select(_I.c.device_id, _I.c.value).where(_I.c.scope == "system", _I.c.name == "group"),
            _I.c.device_id,
            visible,
        ).order_by(_I.c.device_id)
        for r in await conn.execute(q):
            groups.setdefault(str(r.value), []).append(r.device_id)
        newest = (
            sa.select(_DD.c.device_id, sa.func.max(_DD.c.created_ts).label("ts"))
            .group_by(_DD.c.device_id)
            .subquery()
        )
        latest: dict[str, tuple[str, str | None]] = {}
        status_q = sa.select(_DD.c.device_id, _DD.c.status, _DD.c.substate).join(
            newest, sa.and_(newest.c.device_id == _DD.c.device_id, newest.c.ts == _DD.c.created_ts)
        )
        for r in await conn.execute(_scoped(status_q, _DD.c.device_id, visible)):
            latest[r.device_id] = (r.status, r.substate)
        reported = await reports_view(conn, visible)
    meshes = []
    for name in sorted(groups):
        members = groups[name]
        counts: dict[str, int] = {}
        for d in members:
            s = latest.get(d, ("idle", None))[0]
            counts[s] = counts.get(s, 0) + 1
        nodes = [
            {"id": d, "status": latest.get(d, ("idle", None))[0], "substate": latest.get(d, ("", None))[1]}
            for d in members[:_MESH_NODES]
        ]
        meshes.append({"group": name, "nodes_total": len(members), "status_counts": counts, "nodes": nodes})
    return json_response(
        200,
        {
            "sub_meshes": meshes,
            "reported_by_roots": reported,  # what roots say of their streams: not verified by the server
        },
    )
