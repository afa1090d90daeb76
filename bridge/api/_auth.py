"""Who is calling: device tokens and user tokens.

A device token is checked by its signature and expiry; against the transport identity (a token
carrying a ``meshota.tid`` claim is good only on that identity's session, a token without one
only where the adapter supplies no identity, i.e. HTTP); and against the auth set's current
status (cached briefly, see _device_status). A user token is checked against
the users table on every call.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bridge.store import after_commit
from bridge.store import tables as t

from ._context import ApiContext, now
from ._crypto import decode_token
from ._types import ApiError, Request

__all__ = ["TRANSPORT_CLAIM", "DeviceAuth", "bearer", "require_device", "require_user"]

# JWT claim naming the transport identity (gateway-stamped DTLS identity) a device token was
# issued over; a token without it is refused wherever a transport identity is supplied
TRANSPORT_CLAIM = "meshota.tid"


# built once (SQLAlchemy memoizes a statement's cache key on the object)
_AUTH_SET_STATUS = sa.select(t.auth_sets.c.status).where(
    t.auth_sets.c.id == sa.bindparam("b_aid"), t.auth_sets.c.device_id == sa.bindparam("b_device")
)
_USER_EXISTS = sa.select(t.users.c.id).where(t.users.c.id == sa.bindparam("b_user"))


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    device_id: str
    auth_set_id: str


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
    cache = ctx.device_status
    ts = now()
    if cache.is_accepted(device_id, aid, ts):
        return DeviceAuth(device_id, aid)
    generation = cache.generation
    async with ctx.store.read() as conn:
        row = (await conn.execute(_AUTH_SET_STATUS, {"b_aid": aid, "b_device": device_id})).first()
        # a rejected or decommissioned device loses access at once, not when its token expires
        if row is None or row.status != "accepted":
            raise ApiError(401, "device is not accepted")
        # remembered once the transaction that read it has committed (inside a group commit the
        # answer may still be rolled back); at once for a plain read
        after_commit(conn, lambda: cache.remember(device_id, aid, ts, generation))
    return DeviceAuth(device_id, aid)


async def require_user(ctx: ApiContext, request: Request) -> str:
    claims = decode_token(ctx.secret, bearer(request))
    if claims.get("mender.user") is not True:
        raise ApiError(401, "not a user token")
    user_id = str(claims.get("sub", ""))
    async with ctx.store.read() as conn:
        found = (await conn.execute(_USER_EXISTS, {"b_user": user_id})).first()
    if found is None:
        raise ApiError(401, "user no longer exists")
    return user_id
