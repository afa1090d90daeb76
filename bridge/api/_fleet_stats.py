"""The fleet's public statistics (off unless ``Settings.public_stats``) and the facts an
installation's telemetry report is built from.

Counting: a device's check-in (``deployments/next``) adds 1 to the week's cell (version, device
type, age bucket) the first time it checks in that week; its one row in ``fleet_marks`` (first
and last window counted) is overwritten, so no history of check-ins is kept for the statistics.
A root's sealed count record (``RecordOp.COUNT``, wire/countme.py) adds its children's count
to the ``mesh`` source of the same table, once per (root, window, cell): a record its root re-sent
(the answer was lost, the root rebooted) is answered 204 and not added again. The digests that
make this possible (``fleet_mesh_seen``) are kept for this week and last week only and carry no
device id. The two sources are published separately.

Public, read-only and without authentication: ``GET /stats/fleet`` (page with the growth plot),
``/stats/fleet/weekly.json`` and ``/stats/fleet/weekly.csv``, every cell below k = 5 suppressed
(:mod:`bridge.api._public_stats`). When the statistics are off these answer 404 and nothing is
counted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import Store, cross_tenant
from bridge.store import fleet_tables as ft
from bridge.store import tables as t
from wire.countme import (
    CountRecord,
    CountRecordError,
    age_bucket,
    check_label,
    decode_count_record,
    window_of,
)

from ._auth import require_device
from ._context import ApiContext, now
from ._errors import ApiError
from ._public_stats import publish, render_csv, render_json, render_page
from ._types import Request, Response

__all__ = [
    "CellKey",
    "cell_key",
    "count_checkin",
    "fleet_counts",
    "installation_facts",
    "public_cells",
    "stats_csv",
    "stats_json",
    "stats_page",
]

_MARK = sa.select(ft.fleet_marks.c.first_window, ft.fleet_marks.c.last_window).where(
    ft.fleet_marks.c.device_id == sa.bindparam("b_device")
)
_MAX_MESH_COUNT = 100_000  # one root's count record for one cell, at most


def _label(value: object) -> str:
    try:
        return check_label(value, "label")
    except CountRecordError:
        return "other"


async def _add(conn: AsyncConnection, window: int, version: str, dtype: str, bucket: int, source: str,
               n: int) -> None:  # fmt: skip
    key = {"window": window, "version": version, "device_type": dtype, "age_bucket": bucket, "source": source}
    w = ft.fleet_weekly
    where = sa.and_(*(w.c[k] == v for k, v in key.items()))
    done = await conn.execute(sa.update(w).where(where).values(count=w.c.count + n))
    if done.rowcount == 0:
        await conn.execute(sa.insert(w).values(**key, count=n))


async def count_checkin(ctx: ApiContext, device_id: str, provides: dict[str, str]) -> None:
    """Count ``device_id`` once for this week (a read when it already was)."""
    if not ctx.settings.public_stats:
        return
    window = window_of(now())
    async with ctx.store.read() as conn:
        mark = (await conn.execute(_MARK, {"b_device": device_id})).first()
    if mark is not None and mark.last_window >= window:
        return
    async with ctx.store.transaction() as conn:
        mark = (await conn.execute(_MARK, {"b_device": device_id})).first()
        if mark is not None and mark.last_window >= window:
            return  # another request of this device won the race
        m = ft.fleet_marks
        if mark is None:
            first = window
            await conn.execute(
                sa.insert(m).values(device_id=device_id, first_window=window, last_window=window)
            )
        else:
            first = mark.first_window
            await conn.execute(sa.update(m).where(m.c.device_id == device_id).values(last_window=window))
        version = _label(provides.get("artifact_name"))
        dtype = _label(provides.get("device_type"))
        await _add(conn, window, version, dtype, age_bucket(first, window), "checkin", 1)


def _mesh_digest(root: str, rec: CountRecord) -> bytes:
    cell = f"{root}|{rec.window}|{rec.bucket}|{rec.version}|{rec.device_type}"
    return hashlib.blake2b(cell.encode(), digest_size=16, person=b"meshota-count").digest()


async def _first_time(conn: AsyncConnection, is_sqlite: bool, window: int, digest: bytes) -> bool:
    """Mark (window, digest) as added; False when it already was (a concurrent twin included)."""
    s = ft.fleet_mesh_seen
    await conn.execute(sa.delete(s).where(s.c.window < window_of(now()) - 1))
    values = {"window": window, "digest": digest}
    stmt = (sqlite_insert(s) if is_sqlite else pg_insert(s)).values(**values).on_conflict_do_nothing()
    return (await conn.execute(stmt)).rowcount == 1


async def fleet_counts(ctx: ApiContext, req: Request) -> Response:
    """A root's count record for its children (body: the count record bytes), added once."""
    root = await require_device(ctx, req)
    if not ctx.settings.public_stats:
        raise ApiError(404, "public statistics are off")
    try:
        rec = decode_count_record(req.body)
    except CountRecordError as exc:
        raise ApiError(400, str(exc)) from None
    current = window_of(now())
    if rec.window not in (current, current - 1):
        raise ApiError(400, f"window {rec.window} is not this week's or last week's ({current})")
    if rec.count > _MAX_MESH_COUNT:
        raise ApiError(400, f"count {rec.count} over {_MAX_MESH_COUNT}")
    async with ctx.store.transaction() as conn:
        if await _first_time(conn, ctx.store.is_sqlite, rec.window, _mesh_digest(root.device_id, rec)):
            await _add(conn, rec.window, rec.version, rec.device_type, rec.bucket, "mesh", rec.count)
    return Response(204)


CellKey = tuple[int, str, tuple[tuple[str, str], ...]]


def cell_key(window: int, source: str, bucket: int, device_type: str, version: str) -> CellKey:
    """The public cell of a ``fleet_weekly`` row: (window, table, fields)."""
    fields = (("age_bucket", str(bucket)), ("device_type", device_type), ("version", version))
    return (window, f"nodes-{source}", fields)


async def public_cells(store: Store) -> dict[CellKey, int]:
    w = ft.fleet_weekly
    async with store.read() as conn:
        rows = list(await conn.execute(sa.select(w)))
    return {
        cell_key(r.window, r.source, r.age_bucket, r.device_type, r.version): int(r._mapping["count"])
        for r in rows
    }


async def _doc(ctx: ApiContext) -> dict[str, Any]:
    if not ctx.settings.public_stats:
        raise ApiError(404, "public statistics are off on this server")
    return publish(await public_cells(ctx.store))


def _public(body: bytes, content_type: str) -> Response:
    return Response(200, [("Content-Type", content_type), ("Cache-Control", "public, max-age=300")], body)


async def stats_json(ctx: ApiContext, _req: Request) -> Response:
    return _public(render_json(await _doc(ctx)), "application/json")


async def stats_csv(ctx: ApiContext, _req: Request) -> Response:
    return _public(render_csv(await _doc(ctx)), "text/csv; charset=utf-8")


async def stats_page(ctx: ApiContext, _req: Request) -> Response:
    links = {"weekly.json": "/stats/fleet/weekly.json", "weekly.csv": "/stats/fleet/weekly.csv"}
    page = render_page(await _doc(ctx), "Fleet: active nodes per week", links)
    return _public(page, "text/html; charset=utf-8")


async def installation_facts(store: Store) -> dict[str, Any]:
    """What an installation's telemetry report is built from: accepted nodes, and by device type
    and radio profile (inventory attributes ``device_type``, ``radio``), the database kind:
    installation-wide, every organisation's devices counted together."""
    with cross_tenant():
        return await _facts(store)


async def _facts(store: Store) -> dict[str, Any]:
    async with store.read() as conn:
        nodes = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(t.devices).where(t.devices.c.status == "accepted")
            )
        ).scalar_one()
        attrs = await conn.execute(
            sa.select(t.inventory.c.name, t.inventory.c.value)
            .join(t.devices, t.devices.c.id == t.inventory.c.device_id)
            .where(t.devices.c.status == "accepted", t.inventory.c.name.in_(("device_type", "radio")))
        )
        by: dict[str, Counter[str]] = {"device_type": Counter(), "radio": Counter()}
        for name, value in attrs:
            by[name][_label(value)] += 1
    return {
        "nodes": int(nodes),
        "device_types": dict(by["device_type"]),
        "radios": dict(by["radio"]),
        "database": "sqlite" if store.is_sqlite else "postgresql",
    }
