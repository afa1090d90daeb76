"""Organisations: creation, tenant tokens, and where a device's tenant comes from.

A device names its organisation by the tenant token in its auth request (mender.conf
``TenantToken``; the real mender-client sends it as ``tenant_token``), or, over the gateway, by
its transport identity (PSK identity or certificate subject) mapped with
``meshota admin map-identity``. Neither: the default organisation.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import DEFAULT_ORG_ID
from bridge.store import gov_tables as g

from ._permissions import Denied

__all__ = ["Organization", "create_org", "map_identity", "org_by_name", "tenant_of_device", "token_digest"]

_BY_TOKEN = sa.select(g.organizations.c.id).where(
    g.organizations.c.tenant_token_sha256 == sa.bindparam("b_digest")
)
_BY_IDENTITY = sa.select(g.identity_map.c.org_id).where(
    g.identity_map.c.identity == sa.bindparam("b_identity")
)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Organization:
    def __init__(self, id: str, name: str, tenant_token: str | None = None) -> None:
        self.id, self.name, self.tenant_token = id, name, tenant_token


async def create_org(conn: AsyncConnection, name: str) -> Organization:
    """A new organisation and its tenant token (returned once; only its digest is kept)."""
    if not name or len(name) > 255:
        raise Denied("organisation name must be 1..255 characters", 400)
    if (await conn.execute(sa.select(g.organizations.c.id).where(g.organizations.c.name == name))).first():
        raise Denied(f"organisation {name!r} already exists", 409)
    token = "mot_" + secrets.token_urlsafe(32)
    org_id = str(uuid.uuid4())
    await conn.execute(
        sa.insert(g.organizations).values(
            id=org_id, name=name, tenant_token_sha256=token_digest(token), created_ts=time.time()
        )
    )
    return Organization(org_id, name, token)


async def org_by_name(conn: AsyncConnection, name: str) -> Organization:
    row = (await conn.execute(sa.select(g.organizations).where(g.organizations.c.name == name))).first()
    if row is None:
        raise Denied(f"no organisation named {name!r}", 404)
    return Organization(row.id, row.name)


async def map_identity(conn: AsyncConnection, identity: str, org_id: str) -> None:
    """``identity`` (a PSK identity or certificate subject) enrols into ``org_id`` from now on."""
    if not identity or len(identity) > 64:
        raise Denied("identity must be 1..64 characters", 400)
    await conn.execute(sa.delete(g.identity_map).where(g.identity_map.c.identity == identity))
    await conn.execute(sa.insert(g.identity_map).values(identity=identity, org_id=org_id))


async def tenant_of_device(
    conn: AsyncConnection, tenant_token: str, identity: str | None, transport_tenant: str | None = None
) -> str:
    """The organisation a device's auth request enrols into (401 for an unknown tenant token;
    403 when the token and the transport identity's mapping disagree). ``transport_tenant``:
    the organisation the transport vouches for (the MQTT topic's, docs/topics.md); when given,
    the result must be it (a token or mapping naming another one: 403), and with neither a
    token nor a mapping it is the answer."""
    by_token = by_identity = None
    if tenant_token:
        row = (await conn.execute(_BY_TOKEN, {"b_digest": token_digest(tenant_token)})).first()
        if row is None:
            raise Denied("unknown tenant token", 401)
        by_token = row.id
    if identity is not None:
        row = (await conn.execute(_BY_IDENTITY, {"b_identity": identity})).first()
        by_identity = row.org_id if row is not None else None
    if by_token is not None and by_identity is not None and by_token != by_identity:
        raise Denied("the tenant token names another organisation than this transport identity's", 403)
    chosen = by_token or by_identity
    if transport_tenant is not None:
        if chosen is not None and chosen != transport_tenant:
            raise Denied("the device's organisation is not the one of this transport (topic)", 403)
        return transport_tenant
    return chosen or DEFAULT_ORG_ID
