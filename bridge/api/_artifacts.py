"""Artifacts, management side: upload (checked before stored), list, show, download, delete."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.artifacts import ArtifactError, ArtifactInfo, parse_artifact
from bridge.service import Principal, authorize
from bridge.store import cross_tenant
from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext, now
from ._device_deployments import artifact_link
from ._multipart import MultipartStream
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "artifact_json",
    "mgmt_artifact",
    "mgmt_artifacts",
    "mgmt_delete_artifact",
    "mgmt_download_link",
    "mgmt_upload",
    "store_artifact",
    "store_staged_artifact",
]


def _updates(info: ArtifactInfo) -> list[dict[str, Any]]:
    modified = rfc3339(now())
    return [
        {
            "type_info": {"type": p.type},
            "files": [
                {"name": f.name, "checksum": f.sha256, "size": f.size, "date": modified} for f in p.files
            ],
            # mender-cli 1.9 decodes meta_data as an array
            "meta_data": [p.meta_data] if p.meta_data else [],
        }
        for p in info.payloads
    ]


async def store_artifact(ctx: ApiContext, data: bytes, description: str, *, by: Principal) -> str:
    """Check ``data`` completely, then store file and row as ``by``; on any failure nothing remains."""
    with ctx.blobs.staging() as staged:
        with staged.open("wb") as fh:
            await asyncio.to_thread(fh.write, data)
        return await store_staged_artifact(ctx, staged, description, by=by)


async def store_staged_artifact(ctx: ApiContext, staged: Path, description: str, *, by: Principal) -> str:
    """Check the artifact in staging file ``staged`` (from ``BlobStore.staging()``), then move
    it to its content address and insert the row, both or neither (service layer: the upload
    route, bundle import and in-process tools call this with their principal)."""
    authorize(by, "artifacts:upload")  # before the parse: a refused caller costs no CPU
    try:
        info = await asyncio.to_thread(
            parse_artifact,
            staged,
            keys=ctx.settings.verify_keys,
            limits=ctx.settings.artifact_limits,
        )
    except ArtifactError as exc:
        raise ApiError(400, f"invalid artifact: {exc}") from None
    clears = sorted({c for p in info.payloads for c in p.clears_provides})
    provides = dict(info.provides)
    for p in info.payloads:
        provides.update({k: v for k, v in p.provides.items() if isinstance(v, str)})
    artifact_id = str(uuid.uuid4())
    existed = ctx.blobs.exists(info.sha256)
    placed = False
    try:
        async with ctx.gov.unit(by, "artifacts:upload") as uow:
            conn = uow.conn
            await _check_conflict(conn, info)
            await conn.execute(
                sa.insert(t.artifacts).values(
                    id=artifact_id,
                    name=info.name,
                    description=description,
                    device_types=info.device_types,
                    signed=info.signed,
                    size=info.size,
                    sha256=info.sha256,
                    info={"format": info.format, "version": info.version},
                    provides=provides,
                    depends=info.depends,
                    clears_provides=clears,
                    updates=_updates(info),
                    modified_ts=now(),
                )
            )
            await uow.audit(
                "artifact.upload",
                "artifact",
                artifact_id,
                {"name": info.name, "sha256": info.sha256, "signed": info.signed},
            )
            # the file goes in place before the row commits; a failed commit removes it
            ctx.blobs.commit(staged, info.sha256)
            placed = True
    except BaseException:
        if placed and not existed:
            ctx.blobs.remove(info.sha256)
        raise
    return artifact_id


async def _check_conflict(conn: AsyncConnection, info: ArtifactInfo) -> None:
    rows = await conn.execute(sa.select(t.artifacts.c.device_types).where(t.artifacts.c.name == info.name))
    for (types,) in rows:
        if set(types) & set(info.device_types):
            raise ApiError(409, f"an artifact named {info.name!r} for these device types already exists")


async def mgmt_upload(ctx: ApiContext, req: Request) -> Response:
    """Streaming route: the 'artifact' part goes to a staging file as it arrives (size limit
    enforced by the adapter while streaming); a failure at any point removes the file."""
    p = await require_user(ctx, req)
    authorize(p, "artifacts:upload")  # before a byte of the body is read
    form = MultipartStream(req.headers.get("content-type", ""), "artifact")
    with ctx.blobs.staging() as staged, staged.open("wb") as fh:

        async def write(chunk: bytes) -> None:
            await asyncio.to_thread(fh.write, chunk)

        await form.parse(req.body_chunks(), write)
        if not form.file_seen:
            raise ApiError(400, "multipart field 'artifact' is missing")
        fh.close()
        description = form.fields.get("description", b"").decode("utf-8", "replace")
        artifact_id = await store_staged_artifact(ctx, staged, description, by=p)
    return Response(201, [("Location", f"/api/management/v1/deployments/artifacts/{artifact_id}")])


def artifact_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "device_types_compatible": row.device_types,
        "signed": row.signed,
        "modified": rfc3339(row.modified_ts),
        "size": row.size,
        "info": row.info,
        "artifact_provides": row.provides,
        "artifact_depends": row.depends,
        "clears_artifact_provides": row.clears_provides,
        "updates": row.updates,
    }


async def mgmt_artifacts(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    query = sa.select(t.artifacts).order_by(t.artifacts.c.modified_ts, t.artifacts.c.id)
    name = req.query_one("name")
    if name is not None:
        query = query.where(t.artifacts.c.name == name)
    async with ctx.gov.read(p, "artifacts:read") as uow:
        rows = list(await uow.conn.execute(query))
    return json_response(200, [artifact_json(r) for r in rows])


async def _artifact(conn: AsyncConnection, artifact_id: str) -> Any:
    row = (await conn.execute(sa.select(t.artifacts).where(t.artifacts.c.id == artifact_id))).first()
    if row is None:
        raise ApiError(404, "artifact not found")
    return row


async def mgmt_artifact(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "artifacts:read") as uow:
        row = await _artifact(uow.conn, req.path_params["id"])
    return json_response(200, artifact_json(row))


async def mgmt_download_link(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "artifacts:read") as uow:
        await _artifact(uow.conn, req.path_params["id"])
    uri, expire = artifact_link(ctx, req, req.path_params["id"])
    return json_response(200, {"uri": uri, "expire": expire})


async def mgmt_delete_artifact(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    dd = t.device_deployments
    async with ctx.gov.unit(p, "artifacts:delete") as uow:
        conn = uow.conn
        row = await _artifact(conn, req.path_params["id"])
        active = (
            await conn.execute(
                sa.select(dd.c.id).where(dd.c.artifact_id == row.id, dd.c.finished_ts.is_(None)).limit(1)
            )
        ).first()
        if active is not None:
            raise ApiError(409, "artifact is used by an active deployment")
        await conn.execute(sa.delete(t.artifacts).where(t.artifacts.c.id == row.id))
        from bridge.api._chunk_maps import remove_chunk_maps  # late, as in _routes

        await remove_chunk_maps(conn, row.id)  # its cached chunk maps go with it
        await uow.audit("artifact.delete", "artifact", row.id, {"name": row.name, "sha256": row.sha256})
        with cross_tenant():  # files are shared by content: another organisation may hold this one
            others = (
                await conn.execute(
                    sa.select(t.artifacts.c.id).where(t.artifacts.c.sha256 == row.sha256).limit(1)
                )
            ).first()
    if others is None:
        ctx.blobs.remove(row.sha256)
    return Response(204)
