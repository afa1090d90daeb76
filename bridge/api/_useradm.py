"""useradm: login (Basic -> JWT), users and their roles (Mender useradm shapes)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.service import BUILTIN_ROLES
from bridge.store import DEFAULT_ORG_ID, cross_tenant
from bridge.store import gov_tables as g
from bridge.store import tables as t

from ._auth import TENANT_CLAIM, require_user
from ._context import ApiContext, now
from ._crypto import DUMMY_PASSWORD_HASH, check_password, hash_password, issue_token
from ._throttle import too_many
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "ADMIN_ROLE",
    "check_roles",
    "create_user",
    "login",
    "mgmt_create_user",
    "mgmt_delete_user",
    "mgmt_update_user",
    "mgmt_user",
    "mgmt_users",
]

ADMIN_ROLE = "RBAC_ROLE_PERMIT_ALL"
_ROLE_NAMES = sa.select(g.roles.c.name).where(g.roles.c.name.in_(sa.bindparam("b_names", expanding=True)))
_BY_EMAIL = sa.select(t.users).where(t.users.c.email == sa.bindparam("b_email"))


async def check_roles(conn: AsyncConnection, roles: Iterable[str]) -> list[str]:
    """``roles`` as a list, after checking each is built in or a custom role of this organisation."""
    names = list(dict.fromkeys(roles))
    if len(names) > 64 or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names):
        raise ApiError(400, "roles must be at most 64 role names of 1..64 characters")
    custom = [n for n in names if n not in BUILTIN_ROLES]
    if custom:
        found = {r.name for r in await conn.execute(_ROLE_NAMES, {"b_names": custom})}
        missing = [n for n in custom if n not in found]
        if missing:
            raise ApiError(400, f"no such role: {missing[0]!r}")
    return names


async def create_user(
    conn: AsyncConnection, email: str, password: str, roles: Iterable[str] = (ADMIN_ROLE,)
) -> str:
    """Service layer: a user of the organisation in scope, with ``roles`` (also what
    ``meshota admin create-user`` calls, inside its operator unit of work)."""
    if not email or len(email) > 255:
        raise ApiError(400, "user name must be 1..255 characters")
    if len(password) < 8:
        raise ApiError(400, "password must be at least 8 characters")
    if len(password) > 1024:
        raise ApiError(400, "password must be at most 1024 characters")
    names = await check_roles(conn, roles)
    user_id = str(uuid.uuid4())
    ts = now()
    password_hash = await asyncio.to_thread(hash_password, password)  # argon2: off the event loop
    try:
        async with conn.begin_nested():
            await conn.execute(
                sa.insert(t.users).values(
                    id=user_id,
                    email=email,
                    password_hash=password_hash,
                    created_ts=ts,
                    updated_ts=ts,
                )
            )
    except IntegrityError:
        raise ApiError(409, f"user {email!r} already exists") from None
    if names:
        await conn.execute(sa.insert(g.user_roles), [{"user_id": user_id, "role": n} for n in names])
    return user_id


def _login_source(req: Request) -> str:
    """Who is trying: the network peer (HTTP) or the transport identity (MQTT)."""
    if req.identity is not None:
        return f"id:{req.identity}"
    return f"ip:{req.client or 'unknown'}"


async def login(ctx: ApiContext, req: Request) -> Response:
    """Basic -> user JWT. Throttled per source (every attempt) and per user name (failures),
    checked before the password work; the check runs in the bounded thread pool gate, against a
    dummy hash for an unknown user, so a known and an unknown name cost the same."""
    header = req.headers.get("authorization", "")
    if len(header) > ctx.limits.login_header_max:
        raise ApiError(401, "malformed basic credentials")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise ApiError(401, "basic authentication required")
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        raise ApiError(401, "malformed basic credentials") from None
    if not sep:
        raise ApiError(401, "malformed basic credentials")
    ts = now()
    user_wait = ctx.logins_by_user.wait(user, ts)
    if user_wait > 0:
        raise too_many("too many failed logins for this user; retry later", user_wait)
    source_wait = ctx.logins_by_source.take(_login_source(req), ts)
    if source_wait > 0:
        raise too_many("too many login attempts from this source; retry later", source_wait)
    # user names are unique across organisations: the login finds the user's organisation
    with cross_tenant():
        async with ctx.store.read() as conn:
            row = (await conn.execute(_BY_EMAIL, {"b_email": user})).first()
    stored = row.password_hash if row is not None else DUMMY_PASSWORD_HASH
    ok = await ctx.passwords.run(check_password, stored, password)
    if row is None or not ok:
        ctx.logins_by_user.take(user, now())
        raise ApiError(401, "invalid username or password")
    claims = {
        "sub": row.id,
        "mender.user": True,
        "mender.plan": "os",
        TENANT_CLAIM: row.tenant_id or DEFAULT_ORG_ID,
    }
    token = issue_token(ctx.secret, claims, now(), ctx.settings.user_token_lifetime)
    return Response(200, [("Content-Type", "application/jwt")], token.encode())


def _user_json(row: Any, roles: list[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "created_ts": rfc3339(row.created_ts),
        "updated_ts": rfc3339(row.updated_ts),
        "roles": roles,
    }


async def _roles_of(conn: AsyncConnection) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in await conn.execute(sa.select(g.user_roles).order_by(g.user_roles.c.role)):
        out.setdefault(r.user_id, []).append(r.role)
    return out


async def mgmt_users(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "users:read") as uow:
        rows = list(await uow.conn.execute(sa.select(t.users).order_by(t.users.c.created_ts)))
        roles = await _roles_of(uow.conn)
    return json_response(200, [_user_json(r, roles.get(r.id, [])) for r in rows])


async def mgmt_user(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "users:read") as uow:
        row = (
            await uow.conn.execute(sa.select(t.users).where(t.users.c.id == req.path_params["id"]))
        ).first()
        roles = await _roles_of(uow.conn)
    if row is None:
        raise ApiError(404, "user not found")
    return json_response(200, _user_json(row, roles.get(row.id, [])))


def _roles_field(body: dict[str, Any], default: list[str] | None) -> list[str] | None:
    roles = body.get("roles", default)
    if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)):
        raise ApiError(400, "roles must be a list of role names")
    return roles


async def mgmt_create_user(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        raise ApiError(400, "email and password are required strings")
    roles = _roles_field(body, []) or []  # deny by default: a user without roles may do nothing
    async with ctx.gov.unit(p, "users:manage") as uow:
        user_id = await create_user(uow.conn, email, password, roles)
        await uow.audit("user.create", "user", user_id, {"email": email, "roles": roles})
    return Response(201, [("Location", f"/api/management/v1/useradm/users/{user_id}")])


async def mgmt_update_user(ctx: ApiContext, req: Request) -> Response:
    """PUT /users/{id}: ``roles`` replaces the user's roles (Mender Enterprise's shape)."""
    p = await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    roles = _roles_field(body, None)
    user_id = req.path_params["id"]
    async with ctx.gov.unit(p, "users:manage") as uow:
        conn = uow.conn
        if (await conn.execute(sa.select(t.users.c.id).where(t.users.c.id == user_id))).first() is None:
            raise ApiError(404, "user not found")
        if roles is not None:
            names = await check_roles(conn, roles)
            await conn.execute(sa.delete(g.user_roles).where(g.user_roles.c.user_id == user_id))
            if names:
                await conn.execute(sa.insert(g.user_roles), [{"user_id": user_id, "role": n} for n in names])
            await conn.execute(sa.update(t.users).where(t.users.c.id == user_id).values(updated_ts=now()))
            await uow.audit("user.update", "user", user_id, {"roles": names})
    return Response(204)


async def mgmt_delete_user(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    user_id = req.path_params["id"]
    async with ctx.gov.unit(p, "users:manage") as uow:
        result = await uow.conn.execute(sa.delete(t.users).where(t.users.c.id == user_id))
        if result.rowcount:
            await uow.audit("user.delete", "user", user_id)
    return Response(204)
