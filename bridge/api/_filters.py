"""Saved filters: dynamic device groups (Mender inventory v2 ``/filters``).

A saved filter is a name and Mender filter terms (``$eq``/``$in`` on inventory attributes); its
members are the devices matching it at the moment asked. A deployment takes one as ``filter_id``
(its members when the deployment is created). Both searching and deploying respect the caller's
role scope: a group-limited role sees and targets only the matching devices in its groups.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bridge.store import gov_tables as g

from ._auth import require_user
from ._context import ApiContext, now
from ._inventory import check_filters
from ._types import ApiError, Request, Response, json_response

__all__ = ["mgmt_create_filter", "mgmt_delete_filter", "mgmt_filter", "mgmt_filters"]

_F = g.saved_filters
FILTERS_MAX = 1000  # saved filters per organisation


def _json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "terms": row.terms}


async def mgmt_create_filter(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    name, terms = body.get("name"), body.get("terms")
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ApiError(400, "name must be 1..255 characters")
    terms = check_filters(terms)
    if not terms:
        raise ApiError(400, "terms must hold at least one filter term")
    filter_id = str(uuid.uuid4())
    async with ctx.gov.unit(p, "devices:manage") as uow:
        count = (await uow.conn.execute(sa.select(sa.func.count()).select_from(_F))).scalar_one()
        if count >= FILTERS_MAX:
            raise ApiError(409, f"at most {FILTERS_MAX} saved filters")
        try:
            async with uow.conn.begin_nested():
                await uow.conn.execute(
                    sa.insert(_F).values(id=filter_id, name=name, terms=terms, created_ts=now())
                )
        except IntegrityError:
            raise ApiError(409, f"a filter named {name!r} exists") from None
        await uow.audit("filter.create", "filter", filter_id, {"name": name, "terms": terms})
    return Response(201, [("Location", f"/api/management/v2/inventory/filters/{filter_id}")])


async def mgmt_filters(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "devices:read") as uow:
        rows = list(await uow.conn.execute(sa.select(_F).order_by(_F.c.name)))
    return json_response(200, [_json(r) for r in rows])


async def mgmt_filter(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "devices:read") as uow:
        row = (await uow.conn.execute(sa.select(_F).where(_F.c.id == req.path_params["id"]))).first()
    if row is None:
        raise ApiError(404, "filter not found")
    return json_response(200, _json(row))


async def mgmt_delete_filter(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    filter_id = req.path_params["id"]
    async with ctx.gov.unit(p, "devices:manage") as uow:
        result = await uow.conn.execute(sa.delete(_F).where(_F.c.id == filter_id))
        if not result.rowcount:
            raise ApiError(404, "filter not found")
        await uow.audit("filter.delete", "filter", filter_id)
    return Response(204)
