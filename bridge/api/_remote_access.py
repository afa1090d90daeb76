"""Remote access grants and the service side of a session (issue 16 part 4, docs/remote_access.md).

OFF for every device by default. The device's owner (``remoteaccess:grant``, built-in role
``RBAC_ROLE_DEVICE_OWNER``) grants it for a time box: ``PUT
/api/meshota/v1/management/remote_access/devices/{id}`` with ``{"duration": seconds, "protocols":
[...]}``; ``DELETE`` revokes it. A user with ``remoteaccess:use`` may then open sessions
(:func:`open_session`) until the grant expires; every session is audited when it opens, when it is
refused for want of a grant, and when it ends (who, when, how long, bytes each way, why it ended).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bridge.service import Denied, Principal, system
from bridge.store import gov_tables as g
from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext
from ._remote_proto import PROTO_NAMES
from ._scope import check_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "GRANTABLE",
    "SessionTicket",
    "grant_row",
    "grant_state",
    "mgmt_get_grant",
    "mgmt_put_grant",
    "mgmt_revoke_grant",
    "open_session",
    "record_session",
]

_G = g.remote_grants
# what an owner may grant; port forwarding and mender-client control are never relayed;
# "diagnostics" is the MQTT-SN nodes' bounded set (bridge/api/_remote_diag.py)
GRANTABLE = ("shell", "filetransfer", "diagnostics")


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """What :func:`open_session` allowed: the device, until when, over which protocols."""

    device_id: str
    principal: Principal
    expires: float
    protocols: frozenset[int]


def _out(row: Any, now: float) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "granted_by": row.granted_by,
        "granted_ts": rfc3339(row.granted_ts),
        "expires_ts": rfc3339(row.expires_ts),
        "protocols": list(row.protocols),
        "active": row.expires_ts > now,
    }


async def grant_row(conn: Any, device_id: str) -> Any:
    """The device's grant row (expired or not), or None."""
    return await _grant(conn, device_id)


async def _grant(conn: Any, device_id: str) -> Any:
    return (await conn.execute(sa.select(_G).where(_G.c.device_id == device_id))).first()


async def _device_exists(conn: Any, device_id: str) -> None:
    found = (await conn.execute(sa.select(t.devices.c.id).where(t.devices.c.id == device_id))).first()
    if found is None:
        raise ApiError(404, "device not found")


# -- management routes -----------------------------------------------------------------------------
async def mgmt_get_grant(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.read(p, "devices:read") as uow:
        await check_devices(uow, [device_id])
        await _device_exists(uow.conn, device_id)
        row = await _grant(uow.conn, device_id)
    if row is None:
        return json_response(200, {"device_id": device_id, "active": False})
    return json_response(200, _out(row, ctx.clock()))


def _parse_grant(body: Any, max_duration: float) -> tuple[float, list[str]]:
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    duration = body.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise ApiError(400, "duration must be a number of seconds")
    if not 0 < duration <= max_duration:
        raise ApiError(400, f"duration must be a number of seconds in (0, {max_duration:g}]")
    protocols = body.get("protocols", list(GRANTABLE))
    if (
        not isinstance(protocols, list)
        or not protocols
        or any(not isinstance(x, str) or x not in GRANTABLE for x in protocols)
    ):
        raise ApiError(400, f"protocols must be a non-empty list of {', '.join(GRANTABLE)}")
    return float(duration), sorted(set(protocols))


async def mgmt_put_grant(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    duration, protocols = _parse_grant(req.json(), ctx.limits.remote_grant_max)
    device_id = req.path_params["id"]
    ts = ctx.clock()
    async with ctx.gov.unit(p, "remoteaccess:grant") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        await _device_exists(conn, device_id)
        values = {
            "granted_by": p.name,
            "granted_ts": ts,
            "expires_ts": ts + duration,
            "protocols": protocols,
        }
        if await _grant(conn, device_id) is None:
            await conn.execute(sa.insert(_G).values(device_id=device_id, **values))
        else:
            await conn.execute(sa.update(_G).where(_G.c.device_id == device_id).values(**values))
        await uow.audit("remote.grant", "device", device_id, {"duration": duration, "protocols": protocols})
        row = await _grant(conn, device_id)
    return json_response(200, _out(row, ts))


async def mgmt_revoke_grant(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.unit(p, "remoteaccess:grant") as uow:
        await check_devices(uow, [device_id])
        await _device_exists(uow.conn, device_id)
        result = await uow.conn.execute(sa.delete(_G).where(_G.c.device_id == device_id))
        if result.rowcount:
            await uow.audit("remote.revoke", "device", device_id, {})
    return Response(204)


# -- sessions ----------------------------------------------------------------------------------
_BY_NAME = {name: proto for proto, name in PROTO_NAMES.items()}


async def open_session(ctx: ApiContext, principal: Principal, device_id: str) -> SessionTicket:
    """The one check before a user's session reaches a device: ``remoteaccess:use`` on the device
    (its groups), and the owner's grant in force. A refusal for want of a grant is audited."""
    now = ctx.clock()
    refused: str | None = None
    async with ctx.gov.unit(principal, "remoteaccess:use") as uow:
        await check_devices(uow, [device_id])
        status = (
            await uow.conn.execute(sa.select(t.devices.c.status).where(t.devices.c.id == device_id))
        ).scalar_one_or_none()
        row = await _grant(uow.conn, device_id)
        if status != "accepted":
            # a rejected device may still hold a link it opened while accepted
            refused = f"the device is {status or 'unknown'}, not accepted"
        elif row is None:
            refused = "remote access to this device is off: its owner has not granted it"
        elif row.expires_ts <= now:
            refused = "the owner's remote-access grant for this device has expired"
        await uow.audit(
            "remote.session_refused" if refused else "remote.session_open",
            "device",
            device_id,
            {"reason": refused} if refused else {"expires_ts": rfc3339(row.expires_ts)},
        )
    if refused is not None:
        raise ApiError(403, refused)
    protocols = frozenset(_BY_NAME[n] for n in row.protocols if n in _BY_NAME)
    return SessionTicket(device_id, principal, float(row.expires_ts), protocols)


async def grant_state(ctx: ApiContext, ticket: SessionTicket) -> tuple[float | None, str]:
    """(when the session's right ends now, why it would end): the grant may have been extended,
    shortened or revoked since the session opened, the device rejected, the user's permission
    taken away (None: ended already). A read in the ticket holder's organisation."""
    try:
        async with ctx.gov.read(ticket.principal, "remoteaccess:use") as uow:
            row = await _grant(uow.conn, ticket.device_id)
            status = (
                await uow.conn.execute(
                    sa.select(t.devices.c.status).where(t.devices.c.id == ticket.device_id)
                )
            ).scalar_one_or_none()
    except Denied:
        return None, "remoteaccess:use withdrawn"
    if status != "accepted":
        return None, "device no longer accepted"
    if row is None:
        return None, "remote-access grant revoked"
    return float(row.expires_ts), "remote-access grant expired"


async def record_session(ctx: ApiContext, ticket: SessionTicket, summary: dict[str, Any]) -> None:
    """The session's audit entry, by the user who held it (or, if the user lost the permission
    meanwhile, by the ``remote-access`` system principal naming them)."""
    p = ticket.principal
    try:
        async with ctx.gov.unit(p, "remoteaccess:use") as uow:
            await uow.audit("remote.session", "device", ticket.device_id, summary)
        return
    except Denied:
        pass
    job = system(p.tenant_id, "remote-access", ["remoteaccess:use"])
    async with ctx.gov.unit(job, "remoteaccess:use") as uow:
        await uow.audit("remote.session", "device", ticket.device_id, {**summary, "user": p.name})
