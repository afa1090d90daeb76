"""Remote diagnostics of MQTT-SN nodes: ping, logs, reboot — under the remote-access grant rules.

A node has no shell; it gets a bounded command set instead (firmware_proto/diagnostics.py). A user
with ``remoteaccess:use`` queues a command while the owner's grant (with ``diagnostics`` among its
protocols) is in force; the node fetches it through the device API (HTTP or MQTT-SN: same routes)
only while the grant is still in force — when it is not, waiting commands expire — and answers it.
Every command is audited when issued (or refused) and when answered (who asked, the command, the
answer's size, how long it took).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from bridge.service import system
from bridge.store import gov_tables as g

from ._auth import require_device, require_user
from ._context import ApiContext
from ._limits import check_body_size
from ._remote_access import grant_row
from ._scope import check_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = ["COMMANDS", "device_answer", "device_next", "mgmt_commands", "mgmt_issue"]

COMMANDS = ("ping", "logs", "reboot")
_C = g.remote_commands
_WAITING = ("pending", "sent")


def _usable(row: Any, now: float) -> str | None:
    """Why the grant does not allow diagnostics now (None: it does)."""
    if row is None:
        return "remote access to this device is off: its owner has not granted it"
    if row.expires_ts <= now:
        return "the owner's remote-access grant for this device has expired"
    if "diagnostics" not in row.protocols:
        return "the owner's grant does not include diagnostics"
    return None


def _command(body: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict) or body.get("command") not in COMMANDS:
        raise ApiError(400, f"command must be one of {', '.join(COMMANDS)}")
    args: dict[str, Any] = {}
    if body["command"] == "logs":
        lines = body.get("lines", 20)
        if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= 100:
            raise ApiError(400, "lines must be an integer in 1..100")
        args["lines"] = lines
    return str(body["command"]), args


def _out(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "command": row.command,
        "args": dict(row.args),
        "issued_by": row.issued_by,
        "issued_ts": rfc3339(row.issued_ts),
        "state": row.state,
    }
    if row.result is not None:
        out["result"] = row.result
    if row.done_ts is not None:
        out["done_ts"] = rfc3339(row.done_ts)
    return out


# -- management --------------------------------------------------------------------------------
async def mgmt_issue(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    command, args = _command(req.json())
    device_id = req.path_params["id"]
    now = ctx.clock()
    refused: str | None = None
    cid = str(uuid.uuid4())
    async with ctx.gov.unit(p, "remoteaccess:use") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        refused = _usable(await grant_row(conn, device_id), now)
        if refused is not None:
            await uow.audit(
                "remote.diagnostics_refused", "device", device_id, {"command": command, "reason": refused}
            )
        else:
            waiting = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(_C)
                    .where(_C.c.device_id == device_id, _C.c.state.in_(_WAITING))
                )
            ).scalar_one()
            if waiting >= ctx.limits.remote_commands_pending:
                raise ApiError(429, f"{waiting} diagnostics commands are waiting for this device already")
            await conn.execute(
                sa.insert(_C).values(
                    id=cid,
                    device_id=device_id,
                    command=command,
                    args=args,
                    issued_by=p.name,
                    issued_ts=now,
                    state="pending",
                )
            )
            await uow.audit("remote.diagnostics", "device", device_id, {"id": cid, "command": command})
    if refused is not None:
        raise ApiError(403, refused)
    return json_response(202, {"id": cid, "state": "pending"})


async def mgmt_commands(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.read(p, "remoteaccess:use") as uow:
        await check_devices(uow, [device_id])
        rows = await uow.conn.execute(
            sa.select(_C).where(_C.c.device_id == device_id).order_by(_C.c.issued_ts.desc()).limit(20)
        )
        return json_response(200, [_out(r) for r in rows])


# -- device API ----------------------------------------------------------------------------------
async def device_next(ctx: ApiContext, req: Request) -> Response:
    """The oldest waiting command while the grant allows it (a command sent but not answered is
    sent again: the answer may have been lost); none — and the waiting ones expire — once it does
    not."""
    auth = await require_device(ctx, req)
    now = ctx.clock()
    async with ctx.store.transaction() as conn:
        waiting = _C.c.device_id == auth.device_id, _C.c.state.in_(_WAITING)
        if _usable(await grant_row(conn, auth.device_id), now) is not None:
            await conn.execute(sa.update(_C).where(*waiting).values(state="expired", done_ts=now))
            return Response(204)
        row = (await conn.execute(sa.select(_C).where(*waiting).order_by(_C.c.issued_ts).limit(1))).first()
        if row is None:
            return Response(204)
        await conn.execute(sa.update(_C).where(_C.c.id == row.id).values(state="sent", sent_ts=now))
    return json_response(200, {"id": row.id, "command": row.command, "args": dict(row.args)})


async def device_answer(ctx: ApiContext, req: Request) -> Response:
    check_body_size(req.body, ctx.limits.remote_result_max, "diagnostics answer")
    auth = await require_device(ctx, req)
    body = req.json()
    if not isinstance(body, dict) or body.get("status") not in ("done", "refused"):
        raise ApiError(400, 'status must be "done" or "refused"')
    result = body.get("result", {})
    if not isinstance(result, dict):
        raise ApiError(400, "result must be a JSON object")
    cid = req.path_params["id"]
    now = ctx.clock()
    job = system(auth.tenant_id, "remote-diagnostics", ["remoteaccess:use"])
    async with ctx.gov.unit(job, "remoteaccess:use") as uow:
        conn = uow.conn
        row = (
            await conn.execute(sa.select(_C).where(_C.c.id == cid, _C.c.device_id == auth.device_id))
        ).first()
        if row is None:
            raise ApiError(404, "no such diagnostics command for this device")
        if row.state not in _WAITING:
            raise ApiError(409, f"the command is {row.state} already")
        await conn.execute(
            sa.update(_C).where(_C.c.id == cid).values(state=body["status"], result=result, done_ts=now)
        )
        summary = {
            "id": cid,
            "command": row.command,
            "user": row.issued_by,
            "status": body["status"],
            "bytes": len(json.dumps(result)),
            "duration": round(now - row.issued_ts, 3),
        }
        await uow.audit("remote.diagnostics_answer", "device", auth.device_id, summary)
    return Response(204)
