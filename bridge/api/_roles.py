"""useradm roles and personal access tokens (Mender Enterprise shapes).

Roles: ``/api/management/v1/useradm/roles`` — the built-in roles (read-only) and this
organisation's custom roles: ``{"name", "description", "permissions": [...], "groups": [...]}``;
``groups`` limits the device permissions to devices in those groups (empty: every device).

Personal access tokens: ``/api/management/v1/useradm/settings/tokens`` — ``POST {"name",
"expires_in"}`` answers the token (a JWT, ``application/jwt``) once; mender-cli takes it with
``--token-value``. A token acts as its user with the user's roles (looked up on every call) and
works until it expires, is deleted, or its user is.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bridge.service import BUILTIN_ROLES, GROUP_SCOPED, PERMISSIONS, Role
from bridge.store import gov_tables as g

from ._auth import PAT_CLAIM, TENANT_CLAIM, custom_role, require_user
from ._context import ApiContext, now
from ._crypto import issue_token
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "mgmt_create_role",
    "mgmt_create_token",
    "mgmt_delete_role",
    "mgmt_delete_token",
    "mgmt_role",
    "mgmt_roles",
    "mgmt_tokens",
    "mgmt_update_role",
]

PAT_MAX_LIFETIME = 365 * 24 * 3600  # Mender: a year at most
PATS_PER_USER = 10


def _role_json(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "description": role.description,
        "permissions": sorted(role.permissions),
        "groups": sorted(role.groups),
        "builtin": role.builtin,
    }


def _role_body(req: Request, name: str | None) -> tuple[str, str, list[str], list[str]]:
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    name = name if name is not None else body.get("name")
    description = body.get("description", "")
    perms, groups = body.get("permissions", []), body.get("groups", [])
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise ApiError(400, "name must be 1..64 characters")
    if name in BUILTIN_ROLES:
        raise ApiError(409, f"{name} is a built-in role")
    if not isinstance(description, str) or len(description) > 1024:
        raise ApiError(400, "description must be a string of at most 1024 characters")
    if not isinstance(perms, list) or not all(isinstance(x, str) and x in PERMISSIONS for x in perms):
        raise ApiError(400, f"permissions must be a list of: {', '.join(PERMISSIONS)}")
    if (
        not isinstance(groups, list)
        or len(groups) > 100
        or not all(isinstance(x, str) and 0 < len(x) <= 255 for x in groups)
    ):
        raise ApiError(400, "groups must be a list of at most 100 group names")
    if groups and not set(perms) & GROUP_SCOPED:
        raise ApiError(400, f"groups limit only these permissions: {', '.join(sorted(GROUP_SCOPED))}")
    return name, description, sorted(set(perms)), sorted(set(groups))


async def mgmt_roles(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "users:read") as uow:
        rows = list(await uow.conn.execute(sa.select(g.roles).order_by(g.roles.c.name)))
    return json_response(
        200, [_role_json(r) for r in BUILTIN_ROLES.values()] + [_role_json(custom_role(r)) for r in rows]
    )


async def mgmt_role(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    name = req.path_params["name"]
    async with ctx.gov.read(p, "users:read") as uow:
        row = (await uow.conn.execute(sa.select(g.roles).where(g.roles.c.name == name))).first()
    if name in BUILTIN_ROLES:
        return json_response(200, _role_json(BUILTIN_ROLES[name]))
    if row is None:
        raise ApiError(404, "role not found")
    return json_response(200, _role_json(custom_role(row)))


async def mgmt_create_role(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    name, description, perms, groups = _role_body(req, None)
    async with ctx.gov.unit(p, "users:manage") as uow:
        try:
            async with uow.conn.begin_nested():
                await uow.conn.execute(
                    sa.insert(g.roles).values(
                        id=str(uuid.uuid4()),
                        name=name,
                        description=description,
                        permissions=perms,
                        groups=groups,
                        created_ts=now(),
                    )
                )
        except IntegrityError:
            raise ApiError(409, f"role {name!r} already exists") from None
        await uow.audit("role.create", "role", name, {"permissions": perms, "groups": groups})
    return Response(201, [("Location", f"/api/management/v1/useradm/roles/{name}")])


async def mgmt_update_role(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    name, description, perms, groups = _role_body(req, req.path_params["name"])
    async with ctx.gov.unit(p, "users:manage") as uow:
        result = await uow.conn.execute(
            sa.update(g.roles)
            .where(g.roles.c.name == name)
            .values(description=description, permissions=perms, groups=groups)
        )
        if not result.rowcount:
            raise ApiError(404, "role not found")
        await uow.audit("role.update", "role", name, {"permissions": perms, "groups": groups})
    return Response(204)


async def mgmt_delete_role(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    name = req.path_params["name"]
    if name in BUILTIN_ROLES:
        raise ApiError(409, f"{name} is a built-in role")
    async with ctx.gov.unit(p, "users:manage") as uow:
        result = await uow.conn.execute(sa.delete(g.roles).where(g.roles.c.name == name))
        if result.rowcount:
            await uow.conn.execute(sa.delete(g.user_roles).where(g.user_roles.c.role == name))
            await uow.audit("role.delete", "role", name)
    return Response(204)


def _user_of(principal_id: str) -> str:
    return principal_id.split("/", 1)[0]


async def mgmt_create_token(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    if p.kind == "token":
        raise ApiError(403, "a personal access token cannot create tokens")
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    name, expires_in = body.get("name"), body.get("expires_in", PAT_MAX_LIFETIME)
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ApiError(400, "name must be 1..255 characters")
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 0 < expires_in <= PAT_MAX_LIFETIME
    ):
        raise ApiError(400, f"expires_in must be 1..{PAT_MAX_LIFETIME} seconds")
    token_id, ts = str(uuid.uuid4()), now()
    async with ctx.gov.unit(p, "tokens:manage") as uow:
        owned = (
            await uow.conn.execute(
                sa.select(sa.func.count())
                .select_from(g.access_tokens)
                .where(g.access_tokens.c.user_id == p.id)
            )
        ).scalar_one()
        if owned >= PATS_PER_USER:
            raise ApiError(409, f"at most {PATS_PER_USER} personal access tokens per user")
        await uow.conn.execute(
            sa.insert(g.access_tokens).values(
                id=token_id, user_id=p.id, name=name, created_ts=ts, expires_ts=ts + expires_in
            )
        )
        await uow.audit("token.create", "token", token_id, {"name": name, "expires_in": expires_in})
    claims = {
        "sub": p.id,
        "mender.user": True,
        "mender.plan": "os",
        TENANT_CLAIM: p.tenant_id,
        PAT_CLAIM: token_id,
    }
    token = issue_token(ctx.secret, claims, ts, expires_in)
    return Response(200, [("Content-Type", "application/jwt")], token.encode())


async def mgmt_tokens(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "tokens:manage") as uow:
        rows = list(
            await uow.conn.execute(
                sa.select(g.access_tokens)
                .where(g.access_tokens.c.user_id == _user_of(p.id))
                .order_by(g.access_tokens.c.created_ts)
            )
        )
    return json_response(
        200,
        [
            {
                "id": r.id,
                "name": r.name,
                "created_ts": rfc3339(r.created_ts),
                "expiration_date": rfc3339(r.expires_ts),
            }
            for r in rows
        ],
    )


async def mgmt_delete_token(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    token_id = req.path_params["id"]
    async with ctx.gov.unit(p, "tokens:manage") as uow:
        result = await uow.conn.execute(
            sa.delete(g.access_tokens).where(
                g.access_tokens.c.id == token_id, g.access_tokens.c.user_id == _user_of(p.id)
            )
        )
        if result.rowcount:
            await uow.audit("token.delete", "token", token_id)
    return Response(204)
