"""Inventory: device attributes (device API) and devices, groups (management API)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.service import UnitOfWork
from bridge.store import tables as t

from ._auth import require_device, require_user
from ._context import ApiContext, now
from ._limits import ApiLimits, check_body_size, encoded_size
from ._paging import MAX_PAGE, paginate, parse_int
from ._scope import check_devices, visible_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "check_filters",
    "device_attributes",
    "device_groups",
    "matching_devices",
    "mgmt_add_to_group",
    "mgmt_clear_group",
    "mgmt_group_devices",
    "mgmt_groups",
    "mgmt_inventory_device",
    "mgmt_inventory_devices",
    "mgmt_remove_from_group",
    "mgmt_search",
    "mgmt_set_group",
    "set_group",
]


def _attributes(body: Any, lim: ApiLimits) -> list[tuple[str, Any, str | None]]:
    if not isinstance(body, list):
        raise ApiError(400, "attributes must be a JSON array")
    if len(body) > lim.inventory_max_attributes:
        raise ApiError(
            400, f"{len(body)} attributes in one update; at most {lim.inventory_max_attributes} are allowed"
        )
    out = []
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ApiError(400, "each attribute needs a string 'name'")
        name = item["name"]
        if not name or len(name) > lim.inventory_name_max:
            raise ApiError(400, f"attribute names are 1..{lim.inventory_name_max} characters")
        if "value" not in item:
            raise ApiError(400, f"attribute {name!r} has no value")
        value = item["value"]
        ok_scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
        if not ok_scalar and not (
            isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)
        ):
            raise ApiError(400, f"attribute {name!r} has an unsupported value")
        size = encoded_size(value)
        if size > lim.inventory_value_max_bytes:
            raise ApiError(
                400,
                f"attribute {name!r}: value of {size} bytes exceeds the limit of "
                f"{lim.inventory_value_max_bytes} bytes",
            )
        desc = item.get("description")
        if isinstance(desc, str) and len(desc) > lim.inventory_description_max:
            raise ApiError(
                400, f"attribute {name!r}: description exceeds {lim.inventory_description_max} characters"
            )
        out.append((name, value, desc if isinstance(desc, str) else None))
    return out


# built once (SQLAlchemy memoizes a statement's cache key on the object)
_IN_SCOPE = (t.inventory.c.device_id == sa.bindparam("b_device")) & (t.inventory.c.scope == "inventory")
_CLEAR_INVENTORY = sa.delete(t.inventory).where(_IN_SCOPE)
_DROP_ATTRIBUTES = sa.delete(t.inventory).where(
    _IN_SCOPE, t.inventory.c.name.in_(sa.bindparam("b_names", expanding=True))
)
_ADD_ATTRIBUTE = sa.insert(t.inventory).values(device_id=sa.bindparam("b_device"), scope="inventory")
_COUNT_OTHER_ATTRIBUTES = sa.select(sa.func.count()).where(
    _IN_SCOPE, t.inventory.c.name.not_in(sa.bindparam("b_names", expanding=True))
)
_TOUCH_DEVICE = (
    sa.update(t.devices)
    .where(t.devices.c.id == sa.bindparam("b_device"))
    .values(updated_ts=sa.bindparam("b_ts", type_=sa.Float))
)


async def device_attributes(ctx: ApiContext, req: Request) -> Response:
    """PUT replaces the device's "inventory" scope; PATCH upserts."""
    lim = ctx.limits
    check_body_size(req.body, lim.inventory_body_max, "inventory")
    auth = await require_device(ctx, req)
    attrs = _attributes(req.json(), lim)
    ts = now()
    rows = [
        {"b_device": auth.device_id, "name": name, "value": value, "description": desc, "updated_ts": ts}
        for name, value, desc in {a[0]: a for a in attrs}.values()
    ]
    async with ctx.store.transaction() as conn:
        if req.method == "PUT":
            await conn.execute(_CLEAR_INVENTORY, {"b_device": auth.device_id})
        else:
            names = [a[0] for a in attrs]
            # an upsert must not grow the device's inventory past the cap, one PATCH at a time
            kept = (
                await conn.execute(_COUNT_OTHER_ATTRIBUTES, {"b_device": auth.device_id, "b_names": names})
            ).scalar_one()
            if kept + len(rows) > lim.inventory_stored_max_attributes:
                raise ApiError(
                    400,
                    f"the device would have {kept + len(rows)} inventory attributes; "
                    f"at most {lim.inventory_stored_max_attributes} are kept",
                )
            await conn.execute(_DROP_ATTRIBUTES, {"b_device": auth.device_id, "b_names": names})
        if rows:
            await conn.execute(_ADD_ATTRIBUTE, rows)
        await conn.execute(_TOUCH_DEVICE, {"b_device": auth.device_id, "b_ts": ts})
    return Response(200)


async def _inventory_json(conn: AsyncConnection, device_ids: list[str]) -> list[dict[str, Any]]:
    attrs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    updated: dict[str, float] = {}
    if device_ids:
        rows = await conn.execute(
            sa.select(t.inventory)
            .where(t.inventory.c.device_id.in_(device_ids))
            .order_by(t.inventory.c.scope, t.inventory.c.name)
        )
        for r in rows:
            entry = {"name": r.name, "value": r.value, "scope": r.scope}
            if r.description:
                entry["description"] = r.description
            attrs[r.device_id].append(entry)
            updated[r.device_id] = max(updated.get(r.device_id, 0.0), r.updated_ts)
    return [{"id": d, "attributes": attrs[d], "updated_ts": rfc3339(updated.get(d))} for d in device_ids]


def _group_of() -> Any:
    return sa.select(t.inventory.c.device_id).where(
        t.inventory.c.scope == "system", t.inventory.c.name == "group"
    )


async def mgmt_inventory_devices(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    page, per_page = paginate(req, default=10, maximum=500)
    query = sa.select(t.devices.c.id).order_by(t.devices.c.created_ts, t.devices.c.id)
    group = req.query_one("group")
    has_group = req.query_one("has_group")
    async with ctx.gov.read(p, "devices:read") as uow:
        conn = uow.conn
        visible = await visible_devices(uow)
        if visible is not None:
            query = query.where(t.devices.c.id.in_(sorted(visible)))
        if group is not None:
            members = await _group_members(conn, group)
            query = query.where(t.devices.c.id.in_(members))
        if has_group is not None:
            grouped = _group_of()
            if has_group == "true":
                query = query.where(t.devices.c.id.in_(grouped))
            else:
                query = query.where(t.devices.c.id.not_in(grouped))
        for name, values in req.query.items():
            if name in ("page", "per_page", "group", "has_group", "sort"):
                continue
            # a plain name=value filter matches an inventory attribute exactly
            matching = await _attribute_matches(conn, name, values[0])
            query = query.where(t.devices.c.id.in_(matching))
        total = len(list(await conn.execute(query)))
        ids = list((await conn.execute(query.offset((page - 1) * per_page).limit(per_page))).scalars())
        body = await _inventory_json(conn, ids)
    return json_response(200, body, [("X-Total-Count", str(total))])


async def _attribute_matches(conn: AsyncConnection, name: str, value: str) -> list[str]:
    rows = await conn.execute(
        sa.select(t.inventory.c.device_id, t.inventory.c.value).where(t.inventory.c.name == name)
    )
    return [r.device_id for r in rows if r.value == value or str(r.value) == value]


async def _group_members(conn: AsyncConnection, group: str) -> list[str]:
    rows = await conn.execute(
        sa.select(t.inventory.c.device_id, t.inventory.c.value).where(
            t.inventory.c.scope == "system", t.inventory.c.name == "group"
        )
    )
    return [r.device_id for r in rows if r.value == group]


async def mgmt_inventory_device(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.read(p, "devices:read") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        found = (await conn.execute(sa.select(t.devices.c.id).where(t.devices.c.id == device_id))).first()
        if found is None:
            raise ApiError(404, "device not found")
        body = (await _inventory_json(conn, [device_id]))[0]
    return json_response(200, body)


async def set_group(conn: AsyncConnection, device_ids: list[str], group: str | None) -> int:
    """Put devices in a static group (None removes them from any). Returns devices changed."""
    if group is not None and (not group or len(group) > 1024):
        raise ApiError(400, "group names are 1..1024 characters")
    existing = set(
        (await conn.execute(sa.select(t.devices.c.id).where(t.devices.c.id.in_(device_ids)))).scalars()
    )
    ts = now()
    for device_id in existing:
        await conn.execute(
            sa.delete(t.inventory).where(
                t.inventory.c.device_id == device_id,
                t.inventory.c.scope == "system",
                t.inventory.c.name == "group",
            )
        )
        if group is not None:
            await conn.execute(
                sa.insert(t.inventory).values(
                    device_id=device_id, scope="system", name="group", value=group, updated_ts=ts
                )
            )
    return len(existing)


async def mgmt_set_group(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    group = body.get("group") if isinstance(body, dict) else None
    if not isinstance(group, str):
        raise ApiError(400, 'body must be {"group": name}')
    device_id = req.path_params["id"]
    # a group-limited role moves devices only between its own groups
    async with ctx.gov.unit(p, "devices:manage", groups=[group]) as uow:
        await check_devices(uow, [device_id])
        if await set_group(uow.conn, [device_id], group) == 0:
            raise ApiError(404, "device not found")
        await uow.audit("device.group", "device", device_id, {"group": group})
    return Response(204)


async def mgmt_remove_from_group(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id, group = req.path_params["id"], req.path_params["name"]
    async with ctx.gov.unit(p, "devices:manage") as uow:
        await check_devices(uow, [device_id])
        members = await _group_members(uow.conn, group)
        if device_id not in members:
            raise ApiError(404, "device is not in that group")
        await set_group(uow.conn, [device_id], None)
        await uow.audit("device.group", "device", device_id, {"removed_from": group})
    return Response(204)


def _id_list(body: Any) -> list[str]:
    if not isinstance(body, list) or not all(isinstance(i, str) for i in body):
        raise ApiError(400, "body must be a JSON array of device ids")
    return list(body)


async def mgmt_add_to_group(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    ids = _id_list(req.json())
    group = req.path_params["name"]
    async with ctx.gov.unit(p, "devices:manage", groups=[group]) as uow:
        visible = await visible_devices(uow)
        ids = [i for i in ids if visible is None or i in visible]
        changed = await set_group(uow.conn, ids, group)
        if changed:
            await uow.audit("group.add", "group", group, {"devices": sorted(ids)[:100], "count": changed})
    return json_response(200, {"updated_count": changed, "matched_count": changed})


async def mgmt_clear_group(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    ids = _id_list(req.json())
    group = req.path_params["name"]
    async with ctx.gov.unit(p, "devices:manage", groups=[group]) as uow:
        members = set(await _group_members(uow.conn, group))
        gone = [i for i in ids if i in members]
        changed = await set_group(uow.conn, gone, None)
        if changed:
            await uow.audit("group.remove", "group", group, {"devices": sorted(gone)[:100], "count": changed})
    return json_response(200, {"updated_count": changed})


def check_filters(filters: Any) -> list[dict[str, Any]]:
    """Mender inventory v2 filter terms: ``{"scope", "attribute", "type": "$eq"|"$in", "value"}``."""
    if not isinstance(filters, list) or len(filters) > 100:
        raise ApiError(400, "filters must be an array of at most 100 terms")
    for f in filters:
        if not isinstance(f, dict) or f.get("type") not in ("$eq", "$in"):
            raise ApiError(400, "only $eq and $in filters are supported")
        if not isinstance(f.get("attribute"), str) or not isinstance(f.get("scope", "inventory"), str):
            raise ApiError(400, "a filter names an attribute and a scope")
    return filters


async def matching_devices(uow: UnitOfWork, filters: Any) -> list[str]:
    """Device ids (oldest first) matching every filter term, within the grant's reach: what a
    search returns and what a dynamic group (a saved filter) holds at this moment."""
    conn = uow.conn
    ids = list((await conn.execute(sa.select(t.devices.c.id).order_by(t.devices.c.created_ts))).scalars())
    visible = await visible_devices(uow)
    if visible is not None:
        ids = [d for d in ids if d in visible]
    rows = await conn.execute(sa.select(t.inventory))
    attrs: dict[tuple[str, str, str], Any] = {(r.device_id, r.scope, r.name): r.value for r in rows}
    for f in check_filters(filters):
        key = (str(f.get("scope", "inventory")), str(f.get("attribute")))
        wanted = f.get("value")
        choices = wanted if f["type"] == "$in" and isinstance(wanted, list) else [wanted]
        ids = [d for d in ids if attrs.get((d, *key)) in choices]
    return ids


async def device_groups(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(
        sa.select(t.inventory.c.value).where(t.inventory.c.scope == "system", t.inventory.c.name == "group")
    )
    return sorted({str(v) for v in rows.scalars()})


async def mgmt_groups(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "devices:read") as uow:
        groups = await device_groups(uow.conn)
    return json_response(200, [g for g in groups if uow.grant.covers([g])])


async def mgmt_group_devices(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    page, per_page = paginate(req, default=10, maximum=500)
    group = req.path_params["name"]
    async with ctx.gov.read(p, "devices:read") as uow:
        members = sorted(await _group_members(uow.conn, group)) if uow.grant.covers([group]) else []
    if not members:
        raise ApiError(404, "group not found")
    return json_response(200, members[(page - 1) * per_page : page * per_page])


async def mgmt_search(ctx: ApiContext, req: Request) -> Response:
    """v2 filters/search: the "$eq" / "$in" filters on attributes, no sorting."""
    p = await require_user(ctx, req)
    body = req.json() or {}
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    page = parse_int(body.get("page", 1), "page", minimum=1, maximum=MAX_PAGE)
    per_page = parse_int(body.get("per_page", 20), "per_page", minimum=1, maximum=500)
    filters = body.get("filters") or []
    if not isinstance(filters, list):
        raise ApiError(400, "filters must be an array")
    async with ctx.gov.read(p, "devices:read") as uow:
        conn = uow.conn
        ids = await matching_devices(uow, filters)
        page_ids = ids[(page - 1) * per_page : page * per_page]
        body_out = await _inventory_json(conn, page_ids)
    return json_response(200, body_out, [("X-Total-Count", str(len(ids)))])
