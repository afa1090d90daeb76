"""Artifacts (list, upload with progress, signature state) and deployments (create with phases,
windows and consent; live progress per phase; approve/pause/resume/abort; per-device status, logs)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from bridge.api import ApiError, Request, Response

from ._core import Session, Ui, UiError, redirect
from ._pages import action, view

__all__ = [
    "artifact_delete",
    "artifacts",
    "deployment",
    "deployment_action",
    "deployment_create",
    "deployment_log",
    "deployment_new",
    "deployment_progress",
    "deployments",
    "upload",
]

_ART = "/api/management/v1/deployments/artifacts"
_DEP = "/api/management/v1/deployments/deployments"
_ROLL = "/api/meshota/v1/management/rollouts"
_DEVICES_SHOWN = 200  # per-device rows on a deployment page (the counts cover every device)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@view
async def artifacts(ui: Ui, s: Session, req: Request) -> Response:
    rows = await ui.get_json(s, _ART)
    keys = len(ui.ctx.settings.verify_keys)
    return ui.render(
        "artifacts.html", s, rows=rows, verify_keys=keys, nav="artifacts", msg=req.query_one("msg")
    )


@action
async def artifact_delete(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    await ui.call(s, "DELETE", f"{_ART}/{quote(req.path_params['id'], safe='')}")
    return redirect("/ui/artifacts?" + urlencode({"msg": "Artifact deleted."}))


async def upload(ui: Ui, req: Request) -> Response:
    """The multipart body streamed on to the API's upload route (the browser shows progress with
    XHR's upload events); CSRF token in a header, as the body is the API's multipart form."""
    session = await ui.session(req)
    if session is None:
        return Response(401, [("Content-Type", "application/json")], b'{"error":"not logged in"}')
    try:
        ui.check_csrf(session, req.headers.get("x-csrf-token"))
        answer = await ui.call(
            session,
            "POST",
            _ART,
            stream=req.body_chunks(),
            raw=b"",
            content_type=req.headers.get("content-type", ""),
            ok=range(100, 600),
        )
    except ApiError as exc:
        return Response(
            exc.status, [("Content-Type", "application/json")], json.dumps({"error": exc.message}).encode()
        )
    except UiError as exc:
        return Response(
            exc.status, [("Content-Type", "application/json")], json.dumps({"error": exc.message}).encode()
        )
    return Response(answer.status, [("Content-Type", "application/json")], answer.body or b"{}")


@view
async def deployments(ui: Ui, s: Session, req: Request) -> Response:
    status = req.query_one("status") or None
    if status not in (None, "pending", "inprogress", "finished"):
        raise UiError(400, "unknown status filter")
    page = req.query_one("page") or "1"
    answer = await ui.call(s, "GET", _DEP, query={"status": status, "page": page, "per_page": "25"})
    total = int(answer.header("X-Total-Count") or 0)
    return ui.render(
        "deployments.html",
        s,
        rows=answer.json(),
        total=total,
        page=int(page) if page.isdigit() else 1,
        status=status or "",
        nav="deployments",
        msg=req.query_one("msg"),
    )


@view
async def deployment_new(ui: Ui, s: Session, req: Request) -> Response:
    arts = await ui.get_json(s, _ART) if "artifacts:read" in s.can else []
    groups = await ui.get_json(s, "/api/management/v1/inventory/groups")
    filters = await ui.get_json(s, "/api/management/v2/inventory/filters")
    names = sorted({a["name"] for a in arts})
    return ui.render(
        "deployment_new.html",
        s,
        artifact_names=names,
        groups=groups,
        filters=filters,
        days=_DAYS,
        nav="deployments",
    )


def _float(form: dict[str, str], name: str) -> float | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise UiError(400, f"{name} must be a number") from None


def deployment_body(form: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """The API's JSON body from the form (the API validates it; this only reshapes)."""
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "artifact_name": form.get("artifact_name", ""),
    }
    phases_raw = form.get("phases", "").strip()
    phase_groups = form.get("phase_groups", "").strip()
    if phase_groups:
        body["phases"] = [{"group": g.strip()} for g in phase_groups.split(",") if g.strip()]
    elif phases_raw:
        phases: list[dict[str, Any]] = []
        for part in phases_raw.split(","):
            part = part.strip()
            if part in ("", "rest"):
                phases.append({})
            elif part.isdigit():
                phases.append({"batch_size": int(part)})
            else:
                raise UiError(400, "phases: percentages separated by commas, e.g. 10,30,rest")
        body["phases"] = phases
    gates: dict[str, Any] = {}
    for key in ("success_share", "error_share"):
        value = _float(form, key)
        if value is not None:
            gates[key] = value
    if form.get("on_error") in ("pause", "abort"):
        gates["on_error"] = form["on_error"]
    if form.get("approve") == "on":
        gates["approve"] = True
    if gates:
        body["gates"] = gates
    install: dict[str, Any] = {}
    days = [d for d in _DAYS if form.get(f"day_{d}") == "on"]
    start = form.get("window_start", "").strip()
    if days or start:
        hours = _float(form, "window_hours") or 2.0
        install["windows"] = [
            {"days": days or list(_DAYS), "start": start or "00:00", "duration": int(hours * 3600)}
        ]
    if form.get("time_zone", "").strip():
        install["time_zone"] = form["time_zone"].strip()
    if form.get("consent") in ("download-then-ask", "ask-first"):
        install["consent"] = form["consent"]
    if install:
        body["install"] = install
    retries = form.get("retries", "").strip()
    if retries:
        if not retries.isdigit():
            raise UiError(400, "retries must be a whole number")
        body["retries"] = int(retries)
    target = form.get("target", "")
    group: str | None = None
    if target.startswith("group:"):
        group = target[len("group:") :]
    elif target.startswith("filter:"):
        body["filter_id"] = target[len("filter:") :]
    elif target == "all":
        body["all_devices"] = True
    else:
        raise UiError(400, "choose a group or a saved filter to deploy to")
    return body, group


@action
async def deployment_create(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    body, group = deployment_body(form)
    path = f"{_DEP}/group/{quote(group, safe='')}" if group is not None else _DEP
    answer = await ui.call(s, "POST", path, body=body)
    location = answer.header("Location") or ""
    new_id = location.rsplit("/", 1)[-1]
    return redirect(f"/ui/deployments/{quote(new_id, safe='')}?" + urlencode({"msg": "Deployment created."}))


async def _progress(ui: Ui, s: Session, deployment_id: str) -> dict[str, Any]:
    path_id = quote(deployment_id, safe="")
    dep = await ui.get_json(s, f"{_DEP}/{path_id}")
    stats = await ui.get_json(s, f"{_DEP}/{path_id}/statistics")
    devices = await ui.get_json(s, f"{_DEP}/{path_id}/devices")
    return {"dep": dep, "stats": stats, "devices": devices[:_DEVICES_SHOWN], "devices_total": len(devices)}


@view
async def deployment(ui: Ui, s: Session, req: Request) -> Response:
    data = await _progress(ui, s, req.path_params["id"])
    return ui.render("deployment.html", s, nav="deployments", msg=req.query_one("msg"), **data)


@view
async def deployment_progress(ui: Ui, s: Session, req: Request) -> Response:
    """The progress part of the deployment page, for the page's bounded polling."""
    data = await _progress(ui, s, req.path_params["id"])
    return ui.render("_progress.html", s, **data)


@action
async def deployment_action(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    deployment_id = req.path_params["id"]
    path_id = quote(deployment_id, safe="")
    what = req.path_params["action"]
    if what not in ("approve", "pause", "resume", "abort"):
        raise UiError(404, "no such deployment action")
    if what == "abort" and form.get("phased") != "1":
        await ui.call(s, "PUT", f"{_DEP}/{path_id}/status", body={"status": "aborted"})
    else:
        await ui.call(s, "POST", f"{_ROLL}/{path_id}/{what}")
    return redirect(f"/ui/deployments/{path_id}?" + urlencode({"msg": f"Deployment: {what} done."}))


@view
async def deployment_log(ui: Ui, s: Session, req: Request) -> Response:
    dep, dev = (quote(req.path_params[k], safe="") for k in ("id", "device_id"))
    answer = await ui.call(s, "GET", f"{_DEP}/{dep}/devices/{dev}/log")
    text = answer.body.decode("utf-8", "replace")
    return ui.render(
        "log.html",
        s,
        log=text,
        deployment_id=req.path_params["id"],
        device_id=req.path_params["device_id"],
        nav="deployments",
    )
