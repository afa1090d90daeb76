"""Roots' stream progress reports (wire/SPEC.md §7): stored per (root, stream), shown by the mesh view.

    POST /api/meshota/v1/devices/mesh/report      device token; body: the report record bytes

A root (the elected root, or a relay streaming to its children) reports what it saw of one
stream: its members, per member the blocks it still misses, the bytes and frames it put on air.
The root is not trusted: the report is stored and shown as *reported by* that root, and is
accepted only when (403 otherwise, nothing stored)

- the artifact is one of the root's organisation and deployed to the root, still being deployed
  to some device (the chunk-map rule: a root streams for its targets), or was deployed to some
  device until at most :data:`FINAL_GRACE` seconds ago (a root that is no target itself sends its
  stream's final report after its nodes finished: their last status may arrive first),
- the stream id is that of a chunk map the server signed for that artifact,
- every listed node is an accepted device of the organisation with a deployment of that
  artifact, and in the root's inventory group when the root has one.

At most ``ApiLimits.mesh_report_burst`` reports per root, then one per ``mesh_report_refill``
seconds (429 with ``Retry-After``; per server process). Kept: the newest report per (root,
stream), at most :data:`STREAMS_PER_ROOT` streams per root (the oldest go); a root's rows go with
the device. No audit entry: a report changes nothing but
what the mesh view shows, and a root sends one every few seconds while it streams.

:func:`reports_view` builds the mesh view's part: per stream, the roots whose reports are not
nested under another report's node, each with its nodes; a node that itself reported the same
stream (a relay) carries its report beneath it — the graph is what roots report, nothing more.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import fleet_tables as ft
from bridge.store import tables as t
from wire.chunk_map import ChunkMap, ChunkMapError
from wire.mesh_report import MAX_RECORD, NODE_STATES, MeshReport, MeshReportError, decode_mesh_report

from ._auth import require_device
from ._context import ApiContext, now
from ._errors import ApiError
from ._limits import check_body_size
from ._throttle import too_many
from ._times import rfc3339
from ._types import Request, Response

__all__ = ["FINAL_GRACE", "STREAMS_PER_ROOT", "device_mesh_report", "reports_view"]

STREAMS_PER_ROOT = 8
FINAL_GRACE = 600.0  # seconds after an artifact's last device deployment ended that reports are taken
VIEW_REPORTS = 200  # newest reports the mesh view reads
_MAX_DEPTH = 8
_R, _D, _I, _DD, _DEP, _A = (
    ft.mesh_reports,
    t.devices,
    t.inventory,
    t.device_deployments,
    t.deployments,
    t.artifacts,
)


async def _signed_streams(conn: AsyncConnection, artifact_id: str) -> set[bytes]:
    """Stream ids of the chunk maps the server signed for this artifact (one per chunk size)."""
    prefix = f"cmap:{artifact_id}:"
    rows = await conn.execute(
        sa.select(t.settings.c.value).where(t.settings.c.key.startswith(prefix, autoescape=True))
    )
    out = set()
    for (value,) in rows:
        try:
            out.add(ChunkMap.decode(bytes.fromhex(value)).head.stream_id())
        except (ValueError, ChunkMapError):
            continue
    return out


async def _group_of(conn: AsyncConnection, device_ids: list[str]) -> dict[str, str]:
    q = sa.select(_I.c.device_id, _I.c.value).where(
        _I.c.scope == "system", _I.c.name == "group", _I.c.device_id.in_(device_ids)
    )
    return {r.device_id: str(r.value) for r in await conn.execute(q)}


async def _streamed_through(conn: AsyncConnection, root: str, artifact: Any) -> bool:
    """The chunk-map rule (deployed to the root, or still being deployed to any device), or some
    device's deployment of it ended at most ``FINAL_GRACE`` seconds ago."""
    query = (
        sa.select(_DD.c.id)
        .join(_DEP, _DEP.c.id == _DD.c.deployment_id)
        .where(
            sa.or_(
                _DD.c.device_id == root,
                _DD.c.finished_ts.is_(None),
                _DD.c.finished_ts >= now() - FINAL_GRACE,
            )
        )
        .where(
            sa.or_(
                _DD.c.artifact_id == artifact.id,
                sa.and_(_DD.c.artifact_id.is_(None), _DEP.c.artifact_name == artifact.name),
            )
        )
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None


async def _check(conn: AsyncConnection, root: str, rep: MeshReport) -> str:
    """The artifact's name as the server knows it, when the report may be stored (else 403)."""
    artifact = (await conn.execute(sa.select(_A.c.id, _A.c.name).where(_A.c.id == rep.artifact_id))).first()
    if artifact is None or not await _streamed_through(conn, root, artifact):
        raise ApiError(403, f"artifact {rep.artifact_id} is not deployed through this root")
    if rep.stream_id not in await _signed_streams(conn, rep.artifact_id):
        raise ApiError(
            403, f"stream {rep.stream_id.hex()} is no chunk map the server signed for this artifact"
        )
    ids = [n.device_id for n in rep.nodes]
    if not ids:
        return str(artifact.name)
    accepted = {
        r.id
        for r in await conn.execute(sa.select(_D.c.id).where(_D.c.id.in_(ids), _D.c.status == "accepted"))
    }
    deployed = {
        r.device_id
        for r in await conn.execute(
            sa.select(_DD.c.device_id)
            .join(_DEP, _DEP.c.id == _DD.c.deployment_id)
            .where(_DD.c.device_id.in_(ids))
            .where(
                sa.or_(
                    _DD.c.artifact_id == artifact.id,
                    sa.and_(_DD.c.artifact_id.is_(None), _DEP.c.artifact_name == artifact.name),
                )
            )
        )
    }
    groups = await _group_of(conn, [root, *ids])
    mine = groups.get(root)
    for d in ids:
        if d not in accepted:
            raise ApiError(403, f"node {d} is no accepted device of this organisation")
        if d not in deployed:
            raise ApiError(403, f"node {d} has no deployment of artifact {rep.artifact_id}")
        if mine is not None and groups.get(d) != mine:
            raise ApiError(403, f"node {d} is not in this root's group {mine}")
    return str(artifact.name)


async def device_mesh_report(ctx: ApiContext, req: Request) -> Response:
    """A root's progress report of one stream (wire/SPEC.md §7): 204 stored, 4xx nothing stored."""
    check_body_size(req.body, MAX_RECORD, "mesh report")
    auth = await require_device(ctx, req)
    wait = ctx.mesh_reports_by_root.take(auth.device_id, now())
    if wait > 0:
        raise too_many("too many mesh reports from this root", wait)
    try:
        rep = decode_mesh_report(req.body)
    except MeshReportError as exc:
        raise ApiError(400, str(exc)) from None
    sid = rep.stream_id.hex()
    row = {
        "root_id": auth.device_id,
        "stream_id": sid,
        "tenant_id": auth.tenant_id,
        "artifact_id": rep.artifact_id,
        "artifact_name": "",  # the server's name for it, below (the root's is not trusted)
        "final": rep.final,
        "complete": rep.complete,
        "rounds": rep.rounds,
        "blocks": rep.blocks,
        "bytes_on_air": rep.bytes_on_air,
        "frames_on_air": rep.frames_on_air,
        "members": rep.members,
        "nodes": [[n.device_id, n.state, n.missing] for n in rep.nodes],
        "reported_ts": now(),
    }
    async with ctx.store.transaction() as conn:
        row["artifact_name"] = await _check(conn, auth.device_id, rep)
        await conn.execute(sa.delete(_R).where(_R.c.root_id == auth.device_id, _R.c.stream_id == sid))
        await conn.execute(sa.insert(_R).values(**row))
        older = (
            sa.select(_R.c.stream_id)
            .where(_R.c.root_id == auth.device_id)
            .order_by(_R.c.reported_ts.desc(), _R.c.stream_id)
            .offset(STREAMS_PER_ROOT)
        )
        stale = [r.stream_id for r in await conn.execute(older)]
        if stale:
            await conn.execute(sa.delete(_R).where(_R.c.root_id == auth.device_id, _R.c.stream_id.in_(stale)))
    return Response(204)


def _report_json(r: Any, visible: set[str] | None) -> dict[str, Any]:
    nodes = [
        {"id": d, "state": NODE_STATES[s] if 0 <= s < len(NODE_STATES) else "unknown", "missing": m,
         "held": max(0, r.blocks - m), "report": None}
        for d, s, m in r.nodes
        if visible is None or d in visible
    ]  # fmt: skip
    return {
        "root": r.root_id,
        "reported_by": f"root {r.root_id}",
        "reported_ts": rfc3339(r.reported_ts),
        "final": bool(r.final),
        "complete": bool(r.complete),
        "rounds": r.rounds,
        "blocks": r.blocks,
        "bytes_on_air": r.bytes_on_air,
        "frames_on_air": r.frames_on_air,
        "members": r.members,
        "nodes": nodes,
    }


def _nest(
    rep: dict[str, Any], by_root: dict[str, dict[str, Any]], placed: set[str], depth: int
) -> dict[str, Any]:
    """Hang under each node the same stream's report of that node, once (a cycle ends the nesting)."""
    placed.add(rep["root"])
    for n in rep["nodes"]:
        sub = by_root.get(n["id"])
        if sub is not None and n["id"] not in placed and depth < _MAX_DEPTH:
            n["report"] = _nest(sub, by_root, placed, depth + 1)
    return rep


async def reports_view(conn: AsyncConnection, visible: set[str] | None) -> list[dict[str, Any]]:
    """The newest reports as trees per stream (roots out of reach of the caller's grant left out;
    nodes out of reach left out of the lists)."""
    q = sa.select(_R).order_by(_R.c.reported_ts.desc()).limit(VIEW_REPORTS)
    if visible is not None:
        q = q.where(_R.c.root_id.in_(sorted(visible)))
    streams: dict[str, list[Any]] = defaultdict(list)
    for r in await conn.execute(q):
        streams[r.stream_id].append(r)
    out = []
    for sid, rows in streams.items():
        by_root = {r.root_id: _report_json(r, visible) for r in rows}
        listed = {n["id"] for rep in by_root.values() for n in rep["nodes"] if n["id"] != rep["root"]}
        placed: set[str] = set()
        tops = [_nest(rep, by_root, placed, 0) for root, rep in by_root.items() if root not in listed]
        tops += [
            _nest(rep, by_root, placed, 0) for root, rep in by_root.items() if root not in placed
        ]  # cycle
        first = rows[0]
        out.append(
            {
                "stream_id": sid,
                "artifact_id": first.artifact_id,
                "artifact_name": first.artifact_name,
                "reported_ts": rfc3339(first.reported_ts),
                "roots": tops,
            }
        )
    return out
