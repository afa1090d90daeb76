"""Dashboard, devices (list, detail, accept/reject/decommission, groups) and the mesh view."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from bridge.api import Request, Response
from bridge.api._paging import parse_int

from ._core import Session, Ui, UiError, redirect
from ._pages import action, view

__all__ = ["dashboard", "device", "device_action", "devices", "filter_create", "mesh"]

_DEVAUTH = "/api/management/v2/devauth/devices"
_INV = "/api/management/v1/inventory"
_EXT = "/api/meshota/v1/management"
PER_PAGE = 50
_STATUSES = ("accepted", "pending", "rejected", "preauthorized", "noauth")


def attrs_of(inventory: dict[str, Any]) -> dict[str, Any]:
    """scope/name -> value of an inventory record (inventory scope by bare name)."""
    out: dict[str, Any] = {}
    for a in inventory.get("attributes", []):
        key = a["name"] if a.get("scope") == "inventory" else f"{a.get('scope')}/{a['name']}"
        out[key] = a.get("value")
    return out


def _page(req: Request) -> int:
    raw = req.query_one("page") or "1"
    return parse_int(raw, "page", minimum=1, maximum=100_000)


@view
async def dashboard(ui: Ui, s: Session, req: Request) -> Response:
    summary = None
    if "devices:read" in s.can:
        summary = await ui.get_json(s, f"{_EXT}/fleet/summary")
    running: list[Any] = []
    if "deployments:read" in s.can:
        deps = "/api/management/v1/deployments/deployments"
        running = await ui.get_json(s, deps, status="inprogress", per_page="10")
        for d in running:
            d["stats"] = await ui.get_json(s, f"{deps}/{quote(d['id'], safe='')}/statistics")
    return ui.render("dashboard.html", s, summary=summary, running=running, nav="dashboard")


@view
async def devices(ui: Ui, s: Session, req: Request) -> Response:
    status = req.query_one("status") or ""
    group = req.query_one("group") or ""
    attr = (req.query_one("attr") or "").strip()
    value = req.query_one("value") or ""
    page = _page(req)
    if status and status not in _STATUSES:
        raise UiError(400, "unknown status filter")
    if attr and attr in ("page", "per_page", "group", "has_group", "sort"):
        raise UiError(400, "that attribute name cannot be filtered on")
    rows: list[dict[str, Any]] = []
    total: int | None = None
    note = None
    if status:
        listed = await ui.get_json(s, _DEVAUTH, status=status, page=str(page), per_page=str(PER_PAGE))
        if group or attr:
            note = "The status filter is applied alone: group and attribute filters are ignored with it."
        for d in listed:
            inv = await ui.get_json(s, f"{_INV}/devices/{quote(d['id'], safe='')}")
            rows.append(
                {"id": d["id"], "status": d["status"], "updated": d["updated_ts"], "attrs": attrs_of(inv)}
            )
        more = len(listed) == PER_PAGE
    else:
        query: dict[str, str | list[str] | None] = {
            "page": str(page),
            "per_page": str(PER_PAGE),
            "group": group or None,
        }
        if attr:
            query[attr] = value
        answer = await ui.call(s, "GET", f"{_INV}/devices", query=query)
        listed = answer.json()
        total = int(answer.header("X-Total-Count") or 0)
        ids = [d["id"] for d in listed]
        statuses: dict[str, dict[str, Any]] = {}
        if ids:
            for d in await ui.get_json(s, _DEVAUTH, id=ids, per_page=str(len(ids))):
                statuses[d["id"]] = d
        for d in listed:
            auth = statuses.get(d["id"], {})
            rows.append(
                {
                    "id": d["id"],
                    "status": auth.get("status", "?"),
                    "updated": d.get("updated_ts"),
                    "attrs": attrs_of(d),
                }
            )
        more = page * PER_PAGE < total
    groups = await ui.get_json(s, f"{_INV}/groups")
    filters = {"status": status, "group": group, "attr": attr, "value": value}
    return ui.render(
        "devices.html",
        s,
        rows=rows,
        total=total,
        page=page,
        more=more,
        filters=filters,
        groups=groups,
        statuses=_STATUSES,
        note=note,
        nav="devices",
        msg=req.query_one("msg"),
    )


@view
async def device(ui: Ui, s: Session, req: Request) -> Response:
    device_id = req.path_params["id"]
    path_id = quote(device_id, safe="")
    auth = await ui.get_json(s, f"{_DEVAUTH}/{path_id}")
    inv = await ui.get_json(s, f"{_INV}/devices/{path_id}")
    history: list[Any] = []
    if "deployments:read" in s.can:
        history = await ui.get_json(s, f"{_EXT}/devices/{path_id}/deployments")
    groups = await ui.get_json(s, f"{_INV}/groups")
    attrs = attrs_of(inv)
    return ui.render(
        "device.html",
        s,
        dev=auth,
        inventory=inv.get("attributes", []),
        group=attrs.get("system/group"),
        history=history,
        groups=groups,
        nav="devices",
        msg=req.query_one("msg"),
    )


@action
async def device_action(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    device_id = req.path_params["id"]
    path_id = quote(device_id, safe="")
    what = req.path_params["action"]
    back = f"/ui/devices/{path_id}"
    if what in ("accept", "reject"):
        aid = form.get("auth_set", "")
        status = "accepted" if what == "accept" else "rejected"
        await ui.call(
            s, "PUT", f"{_DEVAUTH}/{path_id}/auth/{quote(aid, safe='')}/status", body={"status": status}
        )
        msg = f"Device {status}."
    elif what == "decommission":
        await ui.call(s, "DELETE", f"{_DEVAUTH}/{path_id}")
        return redirect("/ui/devices?" + urlencode({"msg": f"Device {device_id} decommissioned."}))
    elif what == "group":
        name = form.get("group", "").strip()
        if name:
            await ui.call(s, "PUT", f"{_INV}/devices/{path_id}/group", body={"group": name})
            msg = f"Device moved to group {name}."
        else:
            old = form.get("old_group", "")
            await ui.call(s, "DELETE", f"{_INV}/devices/{path_id}/group/{quote(old, safe='')}")
            msg = "Device removed from its group."
    else:
        raise UiError(404, "no such device action")
    return redirect(back + "?" + urlencode({"msg": msg}))


@action
async def filter_create(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    """The devices page's group/attribute filter saved as a dynamic group (inventory v2 filters),
    which a deployment can then target."""
    terms = []
    if form.get("group"):
        terms.append({"scope": "system", "attribute": "group", "type": "$eq", "value": form["group"]})
    if form.get("attr"):
        terms.append(
            {"scope": "inventory", "attribute": form["attr"], "type": "$eq", "value": form.get("value", "")}
        )
    await ui.call(
        s, "POST", "/api/management/v2/inventory/filters", body={"name": form.get("name", ""), "terms": terms}
    )
    back = {k: form.get(k, "") for k in ("group", "attr", "value")}
    return redirect("/ui/devices?" + urlencode({**back, "msg": f"Filter {form.get('name', '')} saved."}))


@view
async def mesh(ui: Ui, s: Session, req: Request) -> Response:
    data = await ui.get_json(s, f"{_EXT}/mesh")
    return ui.render("mesh.html", s, meshes=data["sub_meshes"], streams=data["reported_by_roots"], nav="mesh")
