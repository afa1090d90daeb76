"""Deployments, device side: next, status, log, and the signed artifact download."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import cross_tenant
from bridge.store import rollout_tables as rt
from bridge.store import tables as t

from ._auth import DeviceAuth, require_device
from ._context import ApiContext, now
from ._crypto import sign_link, verify_link
from ._fleet_stats import count_checkin
from ._limits import check_body_size
from ._policies import device_policy
from ._ranges import RangeError, byte_span, refused
from ._rollouts import retry_device
from ._times import rfc3339
from ._types import ApiError, FileSlice, Request, Response, json_response

__all__ = [
    "CHECKIN_HEADER",
    "DEVICE_STATUSES",
    "FINISHED",
    "artifact_link",
    "check_log",
    "check_status",
    "download_artifact",
    "next_deployment",
    "put_log",
    "put_status",
    "refresh_deployment",
    "report_status",
    "store_log",
]

# what a device may report (mender deployments model/status.go)
DEVICE_STATUSES = frozenset(
    {
        "downloading",
        "installing",
        "rebooting",
        "success",
        "failure",
        "already-installed",
        "pause_before_installing",
        "pause_before_rebooting",
        "pause_before_committing",
    }
)
FINISHED = frozenset({"success", "failure", "already-installed", "noartifact", "aborted", "decommissioned"})
_LINK_PATH = "/api/devices/v1/deployments/download/artifacts/"


def artifact_link(ctx: ApiContext, req: Request, artifact_id: str) -> tuple[str, str]:
    """An absolute, expiring, HMAC-signed download URI (the client sends no token with it)."""
    expire = rfc3339(int(now()) + ctx.settings.download_link_lifetime)
    assert expire is not None
    query = urlencode({"x-men-expire": expire, "x-men-signature": sign_link(ctx.secret, artifact_id, expire)})
    base = (ctx.settings.public_url or req.base_url).rstrip("/")
    return f"{base}{_LINK_PATH}{artifact_id}?{query}", expire


# Statements are built once with bind parameters: SQLAlchemy memoizes a statement's cache key
# on the object, so a pre-built statement skips expression building and cache-key generation
# (~50 us each, several per device request)
_DD, _D, _A = t.device_deployments, t.deployments, t.artifacts
_R, _RD = rt.rollouts, rt.rollout_devices
_COUNTS = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(sa.case((_DD.c.status.in_(FINISHED), 0), else_=1)), 0),
    sa.func.coalesce(sa.func.sum(sa.case((_DD.c.status == "pending", 0), else_=1)), 0),
).where(_DD.c.deployment_id == sa.bindparam("b_deployment"))
_SET_DEPLOYMENT_STATUS = (
    sa.update(_D)
    .where(_D.c.id == sa.bindparam("b_deployment"), _D.c.status != sa.bindparam("b_status"))
    .values(status=sa.bindparam("b_status"))
)
_FINISH_DEPLOYMENT = (
    sa.update(_D)
    .where(_D.c.id == sa.bindparam("b_deployment"), _D.c.status != "finished", _D.c.finished_ts.is_(None))
    .values(status="finished", finished_ts=sa.bindparam("b_ts"))
)
_UNFINISHED_OF_DEVICE = (
    sa.select(_DD.c.id, _DD.c.status, _DD.c.artifact_id, _DD.c.started_ts, _D.c.id.label("deployment_id"))
    .add_columns(_D.c.artifact_name, _D.c.force_installation, _R.c.install)
    .join(_D, _D.c.id == _DD.c.deployment_id)
    .outerjoin(_R, _R.c.deployment_id == _DD.c.deployment_id)
    .outerjoin(_RD, (_RD.c.deployment_id == _DD.c.deployment_id) & (_RD.c.device_id == _DD.c.device_id))
    .where(
        _DD.c.device_id == sa.bindparam("b_device"),
        _DD.c.finished_ts.is_(None),
        # a phased rollout offers itself to a device only while it runs and the device's phase
        # is open; a device that already started keeps going (also through a pause)
        sa.or_(
            _R.c.deployment_id.is_(None),
            _DD.c.started_ts.is_not(None),
            sa.and_(_R.c.state == "running", _RD.c.phase <= _R.c.current_phase),
        ),
    )
    .order_by(_D.c.created_ts, _D.c.id)
)
_SETTLE = (
    sa.update(_DD)
    .where(_DD.c.id == sa.bindparam("b_id"))
    .values(status=sa.bindparam("b_status"), finished_ts=sa.bindparam("b_ts"))
)
_START = (
    sa.update(_DD)
    .where(_DD.c.id == sa.bindparam("b_id"))
    .values(
        artifact_id=sa.bindparam("b_artifact"),
        started_ts=sa.func.coalesce(_DD.c.started_ts, sa.bindparam("b_ts", type_=sa.Float)),
    )
)
_ARTIFACTS_NAMED = sa.select(_A).where(_A.c.name == sa.bindparam("b_name")).order_by(_A.c.modified_ts)
_ARTIFACT_BY_ID = sa.select(_A).where(_A.c.id == sa.bindparam("b_id"))
_DEVICE_DEPLOYMENT = sa.select(_DD).where(
    _DD.c.deployment_id == sa.bindparam("b_deployment"), _DD.c.device_id == sa.bindparam("b_device")
)
_SET_STATUS = (
    sa.update(_DD)
    .where(_DD.c.id == sa.bindparam("b_id"))
    .values(status=sa.bindparam("b_status"), substate=sa.bindparam("b_substate"))
)
_SET_FINAL_STATUS = _SET_STATUS.values(finished_ts=sa.bindparam("b_ts"))
_SET_LOG = (
    sa.update(_DD)
    .where(_DD.c.id == sa.bindparam("b_id"))
    .values(log=sa.bindparam("b_log", type_=_DD.c.log.type))
)


async def refresh_deployment(conn: AsyncConnection, deployment_id: str) -> None:
    """Derive the deployment's status from its devices; write the row only when it changes
    (every device reports several times, and rewriting one shared row serializes them)."""
    counts = (await conn.execute(_COUNTS, {"b_deployment": deployment_id})).one()
    unfinished, started = int(counts[1]), int(counts[2])
    if unfinished == 0:
        await conn.execute(_FINISH_DEPLOYMENT, {"b_deployment": deployment_id, "b_ts": now()})
        return
    status = "pending" if started == 0 else "inprogress"
    await conn.execute(_SET_DEPLOYMENT_STATUS, {"b_deployment": deployment_id, "b_status": status})


def _provides(req: Request) -> dict[str, str]:
    """The device's artifact_name/device_type (+provides) from any of the three next forms."""
    if req.method == "GET":
        provides = {k: v[0] for k, v in req.query.items() if v}
    else:
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        if "device_provides" in body:  # POST v2
            body = body["device_provides"]
            if not isinstance(body, dict):
                raise ApiError(400, "device_provides must be an object")
        provides = {str(k): v for k, v in body.items() if isinstance(v, str)}
        extra = body.get("artifact_provides")
        if isinstance(extra, dict):
            provides.update({str(k): v for k, v in extra.items() if isinstance(v, str)})
    for required in ("artifact_name", "device_type"):
        value = provides.get(required)
        if not value or len(value) > 4096:
            raise ApiError(400, f"{required} is required (1..4096 characters)")
    return provides


CHECKIN_HEADER = "X-Meshota-Checkin-Interval"


async def next_deployment(ctx: ApiContext, req: Request) -> Response:
    auth = await require_device(ctx, req)
    provides = _provides(req)
    await count_checkin(ctx, auth.device_id, provides)  # public fleet statistics (when enabled)
    # a device polls far more often than anything changes: look first without the writer
    # lock, write only when a deployment must be settled or started
    async with ctx.store.read() as conn:
        found, must_write = await _select_next(conn, auth, provides, write=False)
        if not must_write:
            policy = await device_policy(conn, auth.device_id, found[2] if found is not None else None)
    if must_write:
        async with ctx.store.transaction() as conn:
            found, _ = await _select_next(conn, auth, provides, write=True)
            policy = await device_policy(conn, auth.device_id, found[2] if found is not None else None)
    # the fleet's/group's check-in interval on every answer (a 204 has no body to carry it)
    headers = [(CHECKIN_HEADER, str(policy.checkin_interval))] if policy.checkin_interval else []
    if found is None:
        return Response(204, headers)
    deployment_id, artifact, _ = found
    uri, expire = artifact_link(ctx, req, artifact["id"])
    body: dict[str, Any] = {
        "id": deployment_id,
        "artifact": {
            "id": artifact["id"],
            "artifact_name": artifact["name"],
            "source": {"uri": uri, "expire": expire},
            "device_types_compatible": artifact["device_types"],
        },
    }
    # meshota's extra field (mender-client ignores unknown fields; docs/rollouts.md)
    extra: dict[str, Any] = {}
    if policy.install is not None:
        extra["install"] = policy.install.policy(ctx.clock()).to_next()
    if policy.checkin_interval:
        extra["checkin_interval"] = policy.checkin_interval
    if extra:
        body["meshota"] = extra
    return json_response(200, body, headers)


async def _select_next(
    conn: AsyncConnection, auth: DeviceAuth, provides: dict[str, str], *, write: bool
) -> tuple[tuple[str, dict[str, Any], Any] | None, bool]:
    """The oldest unfinished deployment for this device, settling the ones it cannot take.

    With ``write=False`` nothing is written: the answer is ``(None, True)`` as soon as a
    write would be needed (call again in a write transaction), else ``(found, False)``.
    """
    rows = list(await conn.execute(_UNFINISHED_OF_DEVICE, {"b_device": auth.device_id}))
    ts = now()
    for row in rows:
        artifact = await _artifact_by_id(conn, row.artifact_id) if row.artifact_id is not None else None
        if artifact is None:
            artifact = await _compatible_artifact(conn, row.artifact_name, provides["device_type"])
        settle: str | None = None
        if artifact is None:
            settle = "noartifact"
        elif (
            row.status == "pending"
            and not row.force_installation
            and provides["artifact_name"] == row.artifact_name
        ):
            settle = "already-installed"
        if settle is not None:
            if not write:
                return None, True
            await conn.execute(_SETTLE, {"b_id": row.id, "b_status": settle, "b_ts": ts})
            await refresh_deployment(conn, row.deployment_id)
            continue
        assert artifact is not None
        if row.artifact_id != artifact["id"] or row.started_ts is None:
            if not write:
                return None, True
            await conn.execute(_START, {"b_id": row.id, "b_artifact": artifact["id"], "b_ts": ts})
        return (str(row.deployment_id), artifact, row.install), False
    return None, False


async def _compatible_artifact(conn: AsyncConnection, name: str, device_type: str) -> dict[str, Any] | None:
    rows = await conn.execute(_ARTIFACTS_NAMED, {"b_name": name})
    for row in rows:
        if device_type in row.device_types:
            return dict(row._mapping)
    return None


async def _artifact_by_id(conn: AsyncConnection, artifact_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(_ARTIFACT_BY_ID, {"b_id": artifact_id})).first()
    return dict(row._mapping) if row is not None else None


async def _device_deployment(conn: AsyncConnection, req: Request, auth: DeviceAuth) -> Any:
    params = {"b_deployment": req.path_params["id"], "b_device": auth.device_id}
    row = (await conn.execute(_DEVICE_DEPLOYMENT, params)).first()
    if row is None:
        raise ApiError(404, "deployment not found for this device")
    return row


async def put_status(ctx: ApiContext, req: Request) -> Response:
    auth = await require_device(ctx, req)
    body = req.json()
    status = body.get("status") if isinstance(body, dict) else None
    substate = body.get("substate") if isinstance(body, dict) else None
    check_status(ctx, status, substate)
    async with ctx.store.read() as conn:
        seen = await _device_deployment(conn, req, auth)
    if seen.status == status and seen.substate == substate and status not in FINISHED:
        return Response(204)  # a repeated report (client retry) changes nothing
    async with ctx.store.transaction() as conn:
        await report_status(conn, req.path_params["id"], auth.device_id, str(status), substate)
    return Response(204)


def check_status(ctx: ApiContext, status: object, substate: object) -> None:
    """What a device may report: one of :data:`DEVICE_STATUSES` and a bounded substate."""
    if status not in DEVICE_STATUSES:
        raise ApiError(400, f"invalid status {status!r}")
    limit = ctx.limits.substate_max
    if substate is not None and (not isinstance(substate, str) or len(substate) > limit):
        raise ApiError(400, f"substate must be a string of at most {limit} characters")


async def report_status(
    conn: AsyncConnection, deployment_id: str, device_id: str, status: str, substate: str | None
) -> bool:
    """Service layer: land a device's status report (checked by :func:`check_status`) on its
    deployment, as ``PUT .../deployments/{id}/status`` does; True when something changed.

    The same report twice changes nothing; a finished deployment keeps its final status."""
    row = (
        await conn.execute(_DEVICE_DEPLOYMENT, {"b_deployment": deployment_id, "b_device": device_id})
    ).first()
    if row is None:
        raise ApiError(404, "deployment not found for this device")
    if row.status in ("aborted", "decommissioned"):
        if status == "failure":
            return False  # the client's last word after it saw 409
        raise ApiError(409, f"deployment {row.status}")
    if row.status in FINISHED:
        if row.status == status:
            return False
        raise ApiError(409, f"deployment already finished with {row.status}")
    if row.status == status and row.substate == substate:
        return False
    params = {"b_id": row.id, "b_status": status, "b_substate": substate}
    if status == "failure" and await retry_device(conn, row.deployment_id, device_id, row.id):
        await refresh_deployment(conn, row.deployment_id)
        return True  # a phased rollout's retry: pending again, offered by the next check-in
    if status in FINISHED:
        await conn.execute(_SET_FINAL_STATUS, {**params, "b_ts": now()})
    else:
        await conn.execute(_SET_STATUS, params)
    await refresh_deployment(conn, row.deployment_id)
    return True


def check_log(ctx: ApiContext, messages: object) -> list[dict[str, str]]:
    """A deployment log as a device may send it (limits: docs/limits.md); the kept fields."""
    lim = ctx.limits
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty array")
    if len(messages) > lim.log_max_messages:
        raise ApiError(400, f"{len(messages)} log messages; at most {lim.log_max_messages} are kept")
    kept = []
    for m in messages:
        if not isinstance(m, dict) or not all(
            isinstance(m.get(k), str) for k in ("timestamp", "level", "message")
        ):
            raise ApiError(400, "each log message needs timestamp, level and message")
        if len(m["timestamp"]) > lim.log_field_max or len(m["level"]) > lim.log_field_max:
            raise ApiError(
                400, f"a log message's timestamp and level are at most {lim.log_field_max} characters"
            )
        if len(m["message"]) > lim.log_message_max:
            raise ApiError(400, f"a log message is at most {lim.log_message_max} characters")
        # only the three fields are kept (what the management API shows)
        kept.append({"timestamp": m["timestamp"], "level": m["level"], "message": m["message"]})
    return kept


async def store_log(
    conn: AsyncConnection, deployment_id: str, device_id: str, messages: list[dict[str, str]]
) -> None:
    """Service layer: keep a device's deployment log (checked by :func:`check_log`)."""
    row = (
        await conn.execute(_DEVICE_DEPLOYMENT, {"b_deployment": deployment_id, "b_device": device_id})
    ).first()
    if row is None:
        raise ApiError(404, "deployment not found for this device")
    await conn.execute(_SET_LOG, {"b_id": row.id, "b_log": messages})


async def put_log(ctx: ApiContext, req: Request) -> Response:
    check_body_size(req.body, ctx.limits.log_body_max, "deployment log")
    auth = await require_device(ctx, req)
    body = req.json()
    kept = check_log(ctx, body.get("messages") if isinstance(body, dict) else None)
    async with ctx.store.transaction() as conn:
        await store_log(conn, req.path_params["id"], auth.device_id, kept)
    return Response(204)


async def download_artifact(ctx: ApiContext, req: Request) -> Response:
    artifact_id = req.path_params["id"]
    verify_link(
        ctx.secret,
        artifact_id,
        req.query_one("x-men-expire") or "",
        req.query_one("x-men-signature") or "",
        now(),
    )
    # the signed link is the authority (no token, so no organisation): it names one artifact id,
    # unique across organisations, which only an authorized caller got a link for
    with cross_tenant():
        async with ctx.store.read() as conn:
            artifact = await _artifact_by_id(conn, artifact_id)
    if artifact is None or not ctx.blobs.exists(artifact["sha256"]):
        raise ApiError(404, "artifact not found")
    size = int(artifact["size"])
    headers = [("Content-Type", "application/vnd.mender-artifact"), ("Accept-Ranges", "bytes")]
    path = ctx.blobs.path(artifact["sha256"])
    try:
        span = byte_span(req.headers.get("range"), size)
    except RangeError:
        return refused(size)
    if span is None:
        return Response(200, headers, file=FileSlice(path, 0, size))
    start, end = span
    headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    return Response(206, headers, file=FileSlice(path, start, end - start + 1))
