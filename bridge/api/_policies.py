"""Fleet policies: install windows, consent and check-in interval for the fleet or a group.

Management (meshota extension, docs/rollouts.md)::

    GET|PUT    /api/meshota/v1/management/policies/tenant
    GET|PUT|DELETE /api/meshota/v1/management/policies/groups/{name}

    {"install": {"windows": [...], "time_zone": "Europe/Berlin", "consent": "ask-first"} | null,
     "checkin_interval": 1800 | null}

A device's policy: its deployment's own install rule, else its inventory group's, else the
fleet's (``tenant``); the check-in interval likewise group before tenant. :func:`device_policy` is
what ``next`` delivers (``meshota`` field and ``X-Meshota-Checkin-Interval`` header).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import rollout_tables as rt
from bridge.store import tables as t
from wire.install_policy import InstallRule, PolicyError

from ._auth import require_user
from ._context import ApiContext, now
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "CHECKIN_MAX",
    "CHECKIN_MIN",
    "DevicePolicy",
    "device_policy",
    "mgmt_delete_group_policy",
    "mgmt_get_policy",
    "mgmt_put_policy",
    "parse_install",
    "set_policy",
]

CHECKIN_MIN = 10  # seconds: a floor so a typo cannot make a fleet hammer the server
CHECKIN_MAX = 7 * 24 * 3600
_P = rt.fleet_policies


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    install: InstallRule | None
    checkin_interval: int | None


def parse_install(obj: Any) -> InstallRule | None:
    if obj is None:
        return None
    try:
        return InstallRule.parse(obj)
    except PolicyError as exc:
        raise ApiError(400, str(exc)) from None


def _checkin(obj: Any) -> int | None:
    if obj is None:
        return None
    if not isinstance(obj, int) or isinstance(obj, bool) or not CHECKIN_MIN <= obj <= CHECKIN_MAX:
        raise ApiError(400, f"checkin_interval must be whole seconds in {CHECKIN_MIN}..{CHECKIN_MAX} or null")
    return obj


async def set_policy(
    conn: AsyncConnection, scope: str, name: str, install: InstallRule | None, checkin_interval: int | None
) -> None:
    """Service layer: replace the fleet's (``tenant``, ``""``) or a group's policy."""
    key = (_P.c.scope == scope) & (_P.c.name == name)
    await conn.execute(sa.delete(_P).where(key))
    await conn.execute(
        sa.insert(_P).values(
            scope=scope,
            name=name,
            install=install.to_json() if install is not None else None,
            checkin_interval=checkin_interval,
            updated_ts=now(),
        )
    )


def _scope(req: Request) -> tuple[str, str]:
    name = req.path_params.get("name")
    if name is None:
        return "tenant", ""
    if not name or len(name) > 255:
        raise ApiError(400, "group names are 1..255 characters")
    return "group", name


async def mgmt_get_policy(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    scope, name = _scope(req)
    async with ctx.gov.read(p, "deployments:read", groups=[name] if scope == "group" else None) as uow:
        conn = uow.conn
        row = (await conn.execute(sa.select(_P).where(_P.c.scope == scope, _P.c.name == name))).first()
    if row is None:
        return json_response(200, {"install": None, "checkin_interval": None})
    return json_response(200, {"install": row.install, "checkin_interval": row.checkin_interval})


async def mgmt_put_policy(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    scope, name = _scope(req)
    body = req.json()
    if not isinstance(body, dict) or set(body) - {"install", "checkin_interval"}:
        raise ApiError(400, 'body must be {"install": {...} | null, "checkin_interval": seconds | null}')
    install = parse_install(body.get("install"))
    checkin = _checkin(body.get("checkin_interval"))
    # a group's policy: a group-limited role only on its own groups; the fleet's: unlimited only
    async with ctx.gov.unit(p, "deployments:manage", groups=[name] if scope == "group" else ()) as uow:
        await set_policy(uow.conn, scope, name, install, checkin)
        rule = install.to_json() if install is not None else None
        await uow.audit("policy.set", scope, name, {"install": rule, "checkin_interval": checkin})
    return Response(204)


async def mgmt_delete_group_policy(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    scope, name = _scope(req)
    async with ctx.gov.unit(p, "deployments:manage", groups=[name] if scope == "group" else ()) as uow:
        result = await uow.conn.execute(sa.delete(_P).where(_P.c.scope == scope, _P.c.name == name))
        if result.rowcount:
            await uow.audit("policy.delete", scope, name)
    return Response(204)


_GROUP_OF = sa.select(t.inventory.c.value).where(
    t.inventory.c.device_id == sa.bindparam("b_device"),
    t.inventory.c.scope == "system",
    t.inventory.c.name == "group",
)
_POLICIES = sa.select(_P.c.scope, _P.c.install, _P.c.checkin_interval).where(
    ((_P.c.scope == "tenant") & (_P.c.name == ""))
    | ((_P.c.scope == "group") & (_P.c.name == sa.bindparam("b_group")))
)


async def device_policy(conn: AsyncConnection, device_id: str, own: Any = None) -> DevicePolicy:
    """The policy ``next`` gives this device; ``own``: its deployment's install rule (JSON)."""
    group = (await conn.execute(_GROUP_OF, {"b_device": device_id})).scalar()
    rows = {
        r.scope: r
        for r in await conn.execute(_POLICIES, {"b_group": group if isinstance(group, str) else ""})
    }
    install_json = own
    checkin = None
    for scope in ("group", "tenant"):
        row = rows.get(scope)
        if row is None:
            continue
        if install_json is None:
            install_json = row.install
        if checkin is None:
            checkin = row.checkin_interval
    install = InstallRule.parse(install_json) if install_json is not None else None
    return DevicePolicy(install, checkin)
