"""useradm: login (Basic -> JWT), users."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext, now
from ._crypto import DUMMY_PASSWORD_HASH, check_password, hash_password, issue_token
from ._throttle import too_many
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = ["create_user", "login", "mgmt_create_user", "mgmt_delete_user", "mgmt_users"]


async def create_user(conn: AsyncConnection, email: str, password: str) -> str:
    """Service layer: also what ``meshota admin create-user`` calls."""
    if not email or len(email) > 255:
        raise ApiError(400, "user name must be 1..255 characters")
    if len(password) < 8:
        raise ApiError(400, "password must be at least 8 characters")
    if len(password) > 1024:
        raise ApiError(400, "password must be at most 1024 characters")
    user_id = str(uuid.uuid4())
    ts = now()
    password_hash = await asyncio.to_thread(hash_password, password)  # scrypt: off the event loop
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
    return user_id


def _login_source(req: Request) -> str:
    """Who is trying: the network peer (HTTP) or the transport identity (MQTT)."""
    if req.identity is not None:
        return f"id:{req.identity}"
    return f"ip:{req.client or 'unknown'}"


async def login(ctx: ApiContext, req: Request) -> Response:
    """Basic -> user JWT. Throttled per source (every attempt) and per user name (failures),
    checked before the scrypt work; scrypt runs in the bounded thread pool gate, against a dummy
    hash for an unknown user, so a known and an unknown name cost the same."""
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
    async with ctx.store.read() as conn:
        row = (await conn.execute(sa.select(t.users).where(t.users.c.email == user))).first()
    stored = row.password_hash if row is not None else DUMMY_PASSWORD_HASH
    ok = await ctx.passwords.run(check_password, stored, password)
    if row is None or not ok:
        ctx.logins_by_user.take(user, now())
        raise ApiError(401, "invalid username or password")
    claims = {"sub": row.id, "mender.user": True, "mender.plan": "os"}
    token = issue_token(ctx.secret, claims, now(), ctx.settings.user_token_lifetime)
    return Response(200, [("Content-Type", "application/jwt")], token.encode())


def _user_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "created_ts": rfc3339(row.created_ts),
        "updated_ts": rfc3339(row.updated_ts),
    }


async def mgmt_users(ctx: ApiContext, req: Request) -> Response:
    await require_user(ctx, req)
    async with ctx.store.read() as conn:
        rows = list(await conn.execute(sa.select(t.users).order_by(t.users.c.created_ts)))
    return json_response(200, [_user_json(r) for r in rows])


async def mgmt_create_user(ctx: ApiContext, req: Request) -> Response:
    await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        raise ApiError(400, "email and password are required strings")
    async with ctx.store.transaction() as conn:
        user_id = await create_user(conn, email, password)
    return Response(201, [("Location", f"/api/management/v1/useradm/users/{user_id}")])


async def mgmt_delete_user(ctx: ApiContext, req: Request) -> Response:
    await require_user(ctx, req)
    async with ctx.store.transaction() as conn:
        await conn.execute(sa.delete(t.users).where(t.users.c.id == req.path_params["id"]))
    return Response(204)
