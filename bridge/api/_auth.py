"""Who is calling: device tokens and user tokens.

A device token is checked by its signature and expiry; against the transport identity (a token
carrying a ``meshota.tid`` claim is good only on that identity's session, a token without one
only where the adapter supplies no identity, i.e. HTTP); and against the auth set's current
status (cached briefly, see _device_status). A user token (or a personal access token) is
checked against the users (and access_tokens) table on every call and becomes a
:class:`bridge.service.Principal` with the user's roles.

Both set the request's organisation (the ``mender.tenant`` claim; tokens issued before
organisations existed belong to the default one): every statement the handler runs from then on
is scoped to it (bridge/store/_tenancy.py). The router clears it after each request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bridge.service import BUILTIN_ROLES, Principal, Role
from bridge.store import DEFAULT_ORG_ID, after_commit, tenant_scope
from bridge.store import gov_tables as g
from bridge.store import tables as t
from bridge.store._tenancy import set_tenant

from ._context import ApiContext, now
from ._crypto import decode_token
from ._types import ApiError, Request

__all__ = ["TENANT_CLAIM", "TRANSPORT_CLAIM", "DeviceAuth", "bearer", "require_device", "require_user"]

# JWT claim naming the transport identity (gateway-stamped DTLS identity) a device token was
# issued over; a token without it is refused wherever a transport identity is supplied
TRANSPORT_CLAIM = "meshota.tid"
# JWT claim naming the organisation (Mender Enterprise's claim name)
TENANT_CLAIM = "mender.tenant"
# JWT claim naming the personal access token (its access_tokens row) a token is
PAT_CLAIM = "meshota.pat"


# built once (SQLAlchemy memoizes a statement's cache key on the object)
_AUTH_SET_STATUS = sa.select(t.auth_sets.c.status).where(
    t.auth_sets.c.id == sa.bindparam("b_aid"), t.auth_sets.c.device_id == sa.bindparam("b_device")
)
_USER = sa.select(t.users.c.id, t.users.c.email).where(t.users.c.id == sa.bindparam("b_user"))
_USER_ROLES = sa.select(g.user_roles.c.role).where(g.user_roles.c.user_id == sa.bindparam("b_user"))
_CUSTOM_ROLES = sa.select(g.roles).where(g.roles.c.name.in_(sa.bindparam("b_names", expanding=True)))
_PAT = sa.select(g.access_tokens.c.id).where(
    g.access_tokens.c.id == sa.bindparam("b_pat"), g.access_tokens.c.user_id == sa.bindparam("b_user")
)


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    device_id: str
    auth_set_id: str
    tenant_id: str = DEFAULT_ORG_ID


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token")
    return token.strip()


async def require_device(ctx: ApiContext, request: Request) -> DeviceAuth:
    claims = decode_token(ctx.secret, bearer(request))
    if claims.get("mender.device") is not True:
        raise ApiError(401, "not a device token")
    device_id, aid = str(claims.get("sub", "")), str(claims.get("jti", ""))
    bound = claims.get(TRANSPORT_CLAIM)
    if request.identity is None and bound is not None:
        # issued over a transport identity's own session: only that session may use it
        raise ApiError(401, "token is bound to a transport identity: not valid over this transport")
    if request.identity is not None and request.identity != bound:
        # the transport (e.g. the MQTT-SN gateway) authenticated someone else, or the token was
        # issued without a transport identity (over HTTP): one device never acts as another
        raise ApiError(403, "token does not belong to this transport identity")
    tenant = str(claims.get(TENANT_CLAIM) or DEFAULT_ORG_ID)
    if request.transport_tenant is not None and request.transport_tenant != tenant:
        # e.g. organisation B's gateway relaying a token of organisation A: never acted on
        raise ApiError(403, "token belongs to another organisation than this transport's")
    set_tenant(tenant)
    cache = ctx.device_status
    ts = now()
    if cache.is_accepted(device_id, aid, ts):
        return DeviceAuth(device_id, aid, tenant)
    generation = cache.generation
    async with ctx.store.read() as conn:
        row = (await conn.execute(_AUTH_SET_STATUS, {"b_aid": aid, "b_device": device_id})).first()
        # a rejected or decommissioned device loses access at once, not when its token expires
        if row is None or row.status != "accepted":
            raise ApiError(401, "device is not accepted")
        # remembered once the transaction that read it has committed (inside a group commit the
        # answer may still be rolled back); at once for a plain read
        after_commit(conn, lambda: cache.remember(device_id, aid, ts, generation))
    return DeviceAuth(device_id, aid, tenant)


async def require_user(ctx: ApiContext, request: Request) -> Principal:
    """The user (or personal access token) behind the bearer token, with its roles."""
    claims = decode_token(ctx.secret, bearer(request))
    if claims.get("mender.user") is not True:
        raise ApiError(401, "not a user token")
    user_id = str(claims.get("sub", ""))
    tenant = str(claims.get(TENANT_CLAIM) or DEFAULT_ORG_ID)
    pat = claims.get(PAT_CLAIM)
    with tenant_scope(tenant):
        async with ctx.store.read() as conn:
            user = (await conn.execute(_USER, {"b_user": user_id})).first()
            if user is None:
                raise ApiError(401, "user no longer exists")
            if (
                pat is not None
                and (await conn.execute(_PAT, {"b_pat": str(pat), "b_user": user_id})).first() is None
            ):
                raise ApiError(401, "personal access token revoked")
            names = [r.role for r in await conn.execute(_USER_ROLES, {"b_user": user_id})]
            roles: list[Role] = [BUILTIN_ROLES[n] for n in names if n in BUILTIN_ROLES]
            custom = [n for n in names if n not in BUILTIN_ROLES]
            if custom:
                for row in await conn.execute(_CUSTOM_ROLES, {"b_names": custom}):
                    roles.append(custom_role(row))
    set_tenant(tenant)
    if pat is not None:
        return Principal.of("token", f"{user_id}/{pat}", user.email, tenant, roles)
    return Principal.of("user", user_id, user.email, tenant, roles)


def custom_role(row: Any) -> Role:
    return Role(row.name, row.description, frozenset(row.permissions), frozenset(row.groups))
