"""auditlogs (Mender's shape): ``GET /api/management/v1/auditlogs/logs`` with filters, and
``GET /api/management/v1/auditlogs/logs/export`` as CSV. Read-only: entries are written by the
service layer, in the transaction of the change they describe (bridge/service/_audit.py)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import sqlalchemy as sa

from bridge.store import gov_tables as g

from ._auth import require_user
from ._context import ApiContext
from ._paging import paginate, query_int
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = ["mgmt_audit_export", "mgmt_audit_logs"]

EXPORT_MAX = 100_000  # entries in one CSV export
_A = g.audit_log
_FILTERS = {
    "object_type": _A.c.object_type,
    "object_id": _A.c.object_id,
    "actor_id": _A.c.actor_id,
    "action": _A.c.action,
}


def _query(req: Request) -> Any:
    stmt = sa.select(_A)
    for name, column in _FILTERS.items():
        value = req.query_one(name)
        if value:
            if len(value) > 255:
                raise ApiError(400, f"{name} exceeds 255 characters")
            stmt = stmt.where(column == value)
    email = req.query_one("actor_email")
    if email:
        stmt = stmt.where(_A.c.actor_name == email[:255])
    start = query_int(req, "start_date", 0, minimum=0, maximum=2**33)
    end = query_int(req, "end_date", 0, minimum=0, maximum=2**33)
    if start:
        stmt = stmt.where(_A.c.ts >= start)
    if end:
        stmt = stmt.where(_A.c.ts <= end)
    sort = req.query_one("sort", "desc")
    if sort not in ("asc", "desc"):
        raise ApiError(400, "sort must be asc or desc")
    return stmt.order_by(_A.c.seq.asc() if sort == "asc" else _A.c.seq.desc())


def _cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: no formula from a user-chosen name (=, +, -, @)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _entry(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "actor": {"id": row.actor_id, "type": row.actor_type, "email": row.actor_name},
        "time": rfc3339(row.ts),
        "action": row.action,
        "object": {"id": row.object_id, "type": row.object_type},
        "change": json.dumps(row.change, sort_keys=True),
        "meshota_seq": row.seq,
        "meshota_hash": row.hash,
    }


async def mgmt_audit_logs(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    page, per_page = paginate(req, default=20, maximum=500)
    stmt = _query(req)
    async with ctx.gov.read(p, "audit:read") as uow:
        total = (
            await uow.conn.execute(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery()))
        ).scalar_one()
        rows = list(await uow.conn.execute(stmt.limit(per_page).offset((page - 1) * per_page)))
    return json_response(200, [_entry(r) for r in rows], [("X-Total-Count", str(total))])


async def mgmt_audit_export(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    stmt = _query(req).limit(EXPORT_MAX)
    async with ctx.gov.read(p, "audit:read") as uow:
        rows = list(await uow.conn.execute(stmt))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "seq",
            "time",
            "actor_type",
            "actor_id",
            "actor_email",
            "action",
            "object_type",
            "object_id",
            "change",
            "hash",
        ]
    )
    for r in rows:
        change = json.dumps(r.change, sort_keys=True)
        cells = [
            r.seq,
            rfc3339(r.ts),
            r.actor_type,
            r.actor_id,
            r.actor_name,
            r.action,
            r.object_type,
            r.object_id,
        ]
        writer.writerow([*(_cell(c) for c in cells), _cell(change), r.hash])
    return Response(
        200,
        [
            ("Content-Type", "text/csv; charset=utf-8"),
            ("Content-Disposition", 'attachment; filename="auditlogs.csv"'),
        ],
        out.getvalue().encode(),
    )
