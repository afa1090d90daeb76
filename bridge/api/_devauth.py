"""Device admission: auth_requests (device API) and devauth v2 (management API)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.service import tenant_of_device
from bridge.store import DEFAULT_ORG_ID, DEVICE_CHANNEL, after_commit, current_tenant, notify, tenant_scope
from bridge.store import tables as t

from ._auth import TENANT_CLAIM, TRANSPORT_CLAIM, require_user
from ._context import ApiContext, now
from ._crypto import issue_token, normalize_pubkey, verify_auth_signature
from ._device_status import invalidate_device
from ._limits import ApiLimits, check_body_size, json_depth
from ._paging import paginate
from ._scope import check_devices, visible_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "AUTH_STATUSES",
    "auth_requests",
    "decommission_device",
    "mgmt_decommission",
    "mgmt_delete_auth_set",
    "mgmt_device",
    "mgmt_devices",
    "mgmt_preauthorize",
    "mgmt_set_auth_status",
    "set_auth_status",
]

AUTH_STATUSES = ("pending", "accepted", "rejected", "preauthorized")
# an id_data key that, when present, must equal the transport identity of an auth request over MQTT
ID_DATA_TRANSPORT_KEY = "meshota_id"


# -- device API -----------------------------------------------------------------------------
async def auth_requests(ctx: ApiContext, req: Request) -> Response:
    lim = ctx.limits
    check_body_size(req.body, lim.auth_body_max, "auth request")
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "auth request must be a JSON object")
    id_data, raw_key = body.get("id_data"), body.get("pubkey")
    if not isinstance(id_data, str) or not id_data:
        raise ApiError(400, "id_data must be a non-empty string")
    if not isinstance(raw_key, str) or not raw_key:
        raise ApiError(400, "pubkey must be a non-empty string")
    identity = _check_id_data(id_data, lim)
    tenant_token = body.get("tenant_token", "")
    if not isinstance(tenant_token, str) or len(tenant_token) > 1024:
        raise ApiError(400, "tenant_token must be a string of at most 1024 characters")
    if len(raw_key) > lim.pubkey_max_bytes:
        raise ApiError(400, f"pubkey exceeds {lim.pubkey_max_bytes} characters")
    signature = req.headers.get("x-men-signature")
    if not signature:
        raise ApiError(400, "missing X-MEN-Signature")
    if len(signature) > _SIGNATURE_MAX:
        raise ApiError(400, f"X-MEN-Signature exceeds {_SIGNATURE_MAX} characters")
    # key parsing and the signature check are CPU work: in the thread pool, not on the event loop
    pubkey = await asyncio.to_thread(_verified_key, raw_key, req.body, signature)
    # over MQTT: the gateway-verified transport identity this device is (or becomes) bound to
    tid = req.identity
    if tid is not None and identity.get(ID_DATA_TRANSPORT_KEY, tid) != tid:
        raise ApiError(403, f"id_data names another transport identity than {tid!r}")
    ts = now()
    # a known device with a known key changes nothing: answer from a read, no writer lock
    async with ctx.store.read() as conn:
        # the organisation: the tenant token (mender.conf TenantToken), else the transport
        # identity's mapping, else the default one; everything after runs scoped to it
        tenant = await tenant_of_device(conn, tenant_token.strip(), tid, req.transport_tenant)
        with tenant_scope(tenant):
            known = await _known_auth_set(conn, id_data, pubkey)
    with tenant_scope(tenant):
        return await _admit(ctx, id_data, pubkey, tid, known, ts)


async def _admit(
    ctx: ApiContext, id_data: str, pubkey: str, tid: str | None, known: _Known | None, ts: float
) -> Response:
    if known is not None:
        _check_binding(tid, known.bound, known.presented)
        if known.status != "preauthorized" and (tid is None or known.presented == tid):
            if known.status != "accepted":
                if tid is not None and known.bound is None:
                    async with ctx.store.read() as conn:
                        await _check_holder(conn, id_data, tid)  # bound to another device since
                raise ApiError(401, f"device authentication {known.status}")
            if tid is None or known.bound == tid:
                return _device_token(ctx, known.device_id, known.aid, ts, tid)
    try:
        async with ctx.store.transaction() as conn:
            if tid is not None:
                await _check_holder(conn, id_data, tid)  # before anything is created
            device = await _get_or_create_device(conn, id_data, ts)
            aid, status = await _auth_set_of(conn, device, pubkey, ts, tid)
    except IntegrityError:
        if tid is None:
            raise
        # two first auth requests raced for one transport identity; the loser is told so
        raise ApiError(403, f"transport identity {tid!r} is bound to another device") from None
    if status != "accepted":
        raise ApiError(401, f"device authentication {status}")
    return _device_token(ctx, device["id"], aid, ts, tid)


# base64 of a raw RSA-16384 signature is 2,732 characters
_SIGNATURE_MAX = 4096


def _check_id_data(id_data: str, lim: ApiLimits) -> dict[str, Any]:
    """The identity object, after the size, key-count and depth limits (400 before any work)."""
    size = len(id_data.encode())
    if size > lim.id_data_max_bytes:
        raise ApiError(400, f"id_data of {size} bytes exceeds the limit of {lim.id_data_max_bytes} bytes")
    try:
        identity = json.loads(id_data)
    except (json.JSONDecodeError, RecursionError):
        raise ApiError(400, "id_data must hold a JSON object") from None
    if not isinstance(identity, dict):
        raise ApiError(400, "id_data must hold a JSON object")
    if len(identity) > lim.id_data_max_keys:
        raise ApiError(400, f"id_data has {len(identity)} keys; at most {lim.id_data_max_keys} are allowed")
    depth = json_depth(identity)
    if depth > lim.id_data_max_depth:
        raise ApiError(400, f"id_data is nested {depth} deep; at most {lim.id_data_max_depth} is allowed")
    return identity


def _verified_key(pubkey: str, body: bytes, signature: str) -> str:
    """The canonical PEM of ``pubkey`` once ``signature`` over ``body`` checked out (thread pool)."""
    pem = normalize_pubkey(pubkey)
    if not verify_auth_signature(pem, body, signature):
        raise ApiError(401, "signature verification failed")
    return pem


def _check_binding(tid: str | None, bound: str | None, presented: str | None) -> None:
    """Refuse an auth request that another transport identity than the device's (or key's) sends.

    ``bound``: the device's transport identity (set when an auth set presented over it was
    accepted); ``presented``: the one that first presented this key. Over HTTP (``tid`` None) the
    device's own key still gets a token, one without a transport claim: good over HTTP only.
    """
    if tid is None:
        return
    if bound is not None and bound != tid:
        raise ApiError(403, f"device is bound to another transport identity than {tid!r}")
    if presented is not None and presented != tid:
        raise ApiError(403, f"this key was presented over another transport identity than {tid!r}")


def _digest(id_data: str) -> str:
    """The device's key in its organisation: SHA-256 of id_data (Mender's), and outside the
    default organisation of the organisation's id and id_data, so that one identity can enrol
    in two organisations and neither learns of the other."""
    tenant = current_tenant()
    if tenant is None or tenant == DEFAULT_ORG_ID:
        return hashlib.sha256(id_data.encode()).hexdigest()
    return hashlib.sha256(f"{tenant}\n{id_data}".encode()).hexdigest()


async def _check_holder(conn: AsyncConnection, id_data: str, tid: str) -> None:
    """One transport identity, one device: refuse ``tid`` if another device is bound to it."""
    digest = _digest(id_data)
    holder = (await conn.execute(_HOLDER, {"b_tid": tid})).first()
    if holder is not None and holder.id_data_sha256 != digest:
        raise ApiError(403, f"transport identity {tid!r} is bound to another device")


_HOLDER = sa.select(t.devices.c.id, t.devices.c.id_data_sha256).where(
    t.devices.c.transport_id == sa.bindparam("b_tid")
)


async def _auth_set_of(
    conn: AsyncConnection, device: dict[str, Any], pubkey: str, ts: float, tid: str | None
) -> tuple[str, str]:
    """(auth set id, status) of this device + key, created pending or accepted if preauthorized.

    Over a transport identity ``tid``: the auth set records it when it has none (the first
    transport to present the key); an accepted auth set binds the device to it.
    """
    _check_binding(tid, device["transport_id"], None)
    aset = (
        await conn.execute(
            sa.select(t.auth_sets).where(
                t.auth_sets.c.device_id == device["id"], t.auth_sets.c.pubkey == pubkey
            )
        )
    ).first()
    if aset is None:
        aid = str(uuid.uuid4())
        await conn.execute(
            sa.insert(t.auth_sets).values(
                id=aid, device_id=device["id"], pubkey=pubkey, status="pending", ts=ts, transport_id=tid
            )
        )
        await _refresh_device_status(conn, device["id"], ts)
        return aid, "pending"
    aid, status = str(aset.id), str(aset.status)
    _check_binding(tid, device["transport_id"], aset.transport_id)
    if tid is not None and aset.transport_id is None:
        await conn.execute(sa.update(t.auth_sets).where(t.auth_sets.c.id == aid).values(transport_id=tid))
    if status == "preauthorized":
        await _accept(conn, device["id"], aid, ts)
        status = "accepted"
    elif status == "accepted" and tid is not None and device["transport_id"] is None:
        # accepted before any transport presented it (over HTTP, or by the operator): the key's
        # holder binds the device to the identity it speaks over now
        await _bind_device(conn, device["id"], tid)
    return aid, status


async def _bind_device(conn: AsyncConnection, device_id: str, tid: str) -> None:
    holder = (await conn.execute(_HOLDER, {"b_tid": tid})).first()
    if holder is not None and holder.id != device_id:
        raise ApiError(409, f"transport identity {tid!r} is bound to another device")
    await conn.execute(sa.update(t.devices).where(t.devices.c.id == device_id).values(transport_id=tid))


def _device_token(ctx: ApiContext, device_id: str, aid: str, ts: float, tid: str | None = None) -> Response:
    claims: dict[str, Any] = {"sub": device_id, "jti": aid, "mender.device": True, "mender.plan": "os"}
    tenant = current_tenant()
    if tenant is not None and tenant != DEFAULT_ORG_ID:
        claims[TENANT_CLAIM] = tenant  # the organisation every request with this token is scoped to
    if tid is not None:
        claims[TRANSPORT_CLAIM] = tid  # the token is good over MQTT only on this identity's session
    token = issue_token(ctx.secret, claims, ts, ctx.settings.device_token_lifetime)
    return Response(200, [("Content-Type", "application/jwt")], token.encode())


_KNOWN_AUTH_SET = (
    sa.select(
        t.devices.c.id,
        t.auth_sets.c.id.label("aid"),
        t.auth_sets.c.status,
        t.devices.c.transport_id.label("bound"),
        t.auth_sets.c.transport_id.label("presented"),
    )
    .join(t.auth_sets, t.auth_sets.c.device_id == t.devices.c.id)
    .where(
        t.devices.c.id_data_sha256 == sa.bindparam("b_digest"),
        t.auth_sets.c.pubkey == sa.bindparam("b_pubkey"),
    )
)


@dataclass(frozen=True, slots=True)
class _Known:
    device_id: str
    aid: str
    status: str
    bound: str | None  # the device's transport identity
    presented: str | None  # the transport identity that first presented this key


async def _known_auth_set(conn: AsyncConnection, id_data: str, pubkey: str) -> _Known | None:
    """The auth set of this identity + key with its device's binding, if both are known."""
    digest = _digest(id_data)
    row = (await conn.execute(_KNOWN_AUTH_SET, {"b_digest": digest, "b_pubkey": pubkey})).first()
    if row is None:
        return None
    return _Known(str(row.id), str(row.aid), str(row.status), row.bound, row.presented)


async def _get_or_create_device(conn: AsyncConnection, id_data: str, ts: float) -> dict[str, Any]:
    digest = _digest(id_data)
    row = (await conn.execute(sa.select(t.devices).where(t.devices.c.id_data_sha256 == digest))).first()
    if row is not None:
        return dict(row._mapping)
    device = {
        "id": str(uuid.uuid4()),
        "id_data_sha256": digest,
        "id_data": id_data,
        "status": "pending",
        "created_ts": ts,
        "updated_ts": ts,
        "transport_id": None,
    }
    await conn.execute(sa.insert(t.devices).values(**device))
    identity = json.loads(id_data)
    for name, value in identity.items():
        await conn.execute(
            sa.insert(t.inventory).values(
                device_id=device["id"], scope="identity", name=str(name), value=value, updated_ts=ts
            )
        )
    return device


async def _accept(conn: AsyncConnection, device_id: str, aid: str, ts: float) -> None:
    """Accept the auth set; the transport identity that presented its key becomes the device's."""
    presented = (
        await conn.execute(sa.select(t.auth_sets.c.transport_id).where(t.auth_sets.c.id == aid))
    ).scalar()
    if presented is not None:
        await _bind_device(conn, device_id, presented)
    # at most one accepted auth set per device: accepting one rejects the others
    await conn.execute(
        sa.update(t.auth_sets)
        .where(t.auth_sets.c.device_id == device_id, t.auth_sets.c.id != aid)
        .where(t.auth_sets.c.status == "accepted")
        .values(status="rejected", ts=ts)
    )
    await conn.execute(sa.update(t.auth_sets).where(t.auth_sets.c.id == aid).values(status="accepted", ts=ts))
    await _refresh_device_status(conn, device_id, ts)


async def _refresh_device_status(conn: AsyncConnection, device_id: str, ts: float) -> None:
    """Recompute the device's status from its auth sets; every auth-set change ends here."""
    after_commit(conn, lambda: invalidate_device(device_id))
    await notify(conn, DEVICE_CHANNEL, device_id)  # every other worker's cache, at commit
    statuses = set(
        (
            await conn.execute(sa.select(t.auth_sets.c.status).where(t.auth_sets.c.device_id == device_id))
        ).scalars()
    )
    for candidate in ("accepted", "preauthorized", "pending", "rejected"):
        if candidate in statuses:
            status = candidate
            break
    else:
        status = "noauth"
    await conn.execute(
        sa.update(t.devices).where(t.devices.c.id == device_id).values(status=status, updated_ts=ts)
    )


# -- service layer (also used by the admin CLI) ----------------------------------------------
async def set_auth_status(conn: AsyncConnection, device_id: str, aid: str | None, status: str) -> str:
    """Set an auth set's status; ``aid=None`` picks the device's newest auth set."""
    if status not in AUTH_STATUSES:
        raise ApiError(400, f"invalid auth set status {status!r}")
    query = sa.select(t.auth_sets.c.id).where(t.auth_sets.c.device_id == device_id)
    if aid is not None:
        query = query.where(t.auth_sets.c.id == aid)
    row = (await conn.execute(query.order_by(t.auth_sets.c.ts.desc()).limit(1))).first()
    if row is None:
        raise ApiError(404, f"device {device_id} or its auth set not found")
    ts = now()
    if status == "accepted":
        await _accept(conn, device_id, row.id, ts)
    else:
        await conn.execute(
            sa.update(t.auth_sets).where(t.auth_sets.c.id == row.id).values(status=status, ts=ts)
        )
        await _refresh_device_status(conn, device_id, ts)
    return str(row.id)


async def decommission_device(conn: AsyncConnection, device_id: str) -> None:
    found = await conn.execute(sa.delete(t.devices).where(t.devices.c.id == device_id))
    if found.rowcount == 0:
        raise ApiError(404, f"device {device_id} not found")
    after_commit(conn, lambda: invalidate_device(device_id))
    await notify(conn, DEVICE_CHANNEL, device_id)
    await conn.execute(sa.delete(t.auth_sets).where(t.auth_sets.c.device_id == device_id))
    await conn.execute(sa.delete(t.inventory).where(t.inventory.c.device_id == device_id))
    ts = now()
    await conn.execute(
        sa.update(t.device_deployments)
        .where(t.device_deployments.c.device_id == device_id)
        .where(t.device_deployments.c.finished_ts.is_(None))
        .values(status="decommissioned", finished_ts=ts)
    )


# -- management API (devauth v2) -------------------------------------------------------------
async def _device_json(conn: AsyncConnection, rows: list[Any]) -> list[dict[str, Any]]:
    ids = [r.id for r in rows]
    sets: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        result = await conn.execute(
            sa.select(t.auth_sets).where(t.auth_sets.c.device_id.in_(ids)).order_by(t.auth_sets.c.ts)
        )
        for a in result:
            aset = {"id": a.id, "pubkey": a.pubkey, "status": a.status, "ts": rfc3339(a.ts)}
            if a.transport_id is not None:
                # meshota extension: the verified transport identity that presented this key;
                # accepting the auth set binds the device to it
                aset["meshota_transport_id"] = a.transport_id
            sets[a.device_id].append(aset)
    out = []
    for r in rows:
        identity = json.loads(r.id_data)
        for aset in sets[r.id]:
            aset["identity_data"] = identity
        out.append(
            {
                "id": r.id,
                "identity_data": identity,
                "status": r.status,
                "created_ts": rfc3339(r.created_ts),
                "updated_ts": rfc3339(r.updated_ts),
                "auth_sets": sets[r.id],
                "decommissioning": False,
            }
        )
    return out


async def mgmt_devices(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    page, per_page = paginate(req, default=20, maximum=500)
    query = sa.select(t.devices).order_by(t.devices.c.created_ts, t.devices.c.id)
    status = req.query_one("status")
    if status is not None:
        if status not in (*AUTH_STATUSES, "noauth"):
            raise ApiError(400, f"invalid status filter {status!r}")
        query = query.where(t.devices.c.status == status)
    ids = req.query.get("id")
    if ids:
        query = query.where(t.devices.c.id.in_(ids))
    async with ctx.gov.read(p, "devices:read") as uow:
        visible = await visible_devices(uow)
        if visible is not None:
            query = query.where(t.devices.c.id.in_(sorted(visible)))
        rows = list(await uow.conn.execute(query.offset((page - 1) * per_page).limit(per_page)))
        return json_response(200, await _device_json(uow.conn, rows))


async def mgmt_device(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "devices:read") as uow:
        await check_devices(uow, [req.path_params["id"]])
        rows = list(
            await uow.conn.execute(sa.select(t.devices).where(t.devices.c.id == req.path_params["id"]))
        )
        if not rows:
            raise ApiError(404, "device not found")
        return json_response(200, (await _device_json(uow.conn, rows))[0])


async def mgmt_set_auth_status(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, str):
        raise ApiError(400, 'body must be {"status": ...}')
    device_id = req.path_params["id"]
    async with ctx.gov.unit(p, "devices:manage") as uow:
        await check_devices(uow, [device_id])
        aid = await set_auth_status(uow.conn, device_id, req.path_params["aid"], status)
        await uow.audit("device.auth_status", "device", device_id, {"auth_set": aid, "status": status})
    return Response(204)


async def mgmt_preauthorize(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    identity, pubkey = body.get("identity_data"), body.get("pubkey")
    if not isinstance(identity, dict) or not identity:
        raise ApiError(400, "identity_data must be a non-empty object")
    if not isinstance(pubkey, str):
        raise ApiError(400, "pubkey must be a PEM string")
    if len(pubkey) > ctx.limits.pubkey_max_bytes:
        raise ApiError(400, f"pubkey exceeds {ctx.limits.pubkey_max_bytes} characters")
    pubkey = normalize_pubkey(pubkey)
    # the device sends id_data as Go's json.Marshal output: sorted keys, no spaces
    id_data = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    _check_id_data(id_data, ctx.limits)  # the same limits as a device's own auth request
    ts = now()
    # An operator call: it never hands out a device token (a known device is a 409 conflict).
    # A group-limited role cannot preauthorize: a new device is in no group, so out of its reach.
    async with ctx.gov.unit(p, "devices:manage", groups=()) as uow:
        conn = uow.conn
        device = await _get_or_create_device(conn, id_data, ts)
        existing = (
            await conn.execute(sa.select(t.auth_sets.c.id).where(t.auth_sets.c.device_id == device["id"]))
        ).first()
        if existing is not None and not body.get("force"):
            raise ApiError(409, "device already exists")
        await conn.execute(
            sa.delete(t.auth_sets).where(
                t.auth_sets.c.device_id == device["id"], t.auth_sets.c.pubkey == pubkey
            )
        )
        await conn.execute(
            sa.insert(t.auth_sets).values(
                id=str(uuid.uuid4()),
                device_id=device["id"],
                pubkey=pubkey,
                status="preauthorized",
                ts=ts,
            )
        )
        await _refresh_device_status(conn, device["id"], ts)
        await uow.audit("device.preauthorize", "device", device["id"], {"identity_data": identity})
    location = f"/api/management/v2/devauth/devices/{device['id']}"
    return Response(201, [("Location", location)])


async def mgmt_decommission(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.unit(p, "devices:manage") as uow:
        await check_devices(uow, [device_id])
        await decommission_device(uow.conn, device_id)
        await uow.audit("device.decommission", "device", device_id)
    return Response(204)


async def mgmt_delete_auth_set(ctx: ApiContext, req: Request) -> Response:
    p = await require_user(ctx, req)
    device_id, aid = req.path_params["id"], req.path_params["aid"]
    async with ctx.gov.unit(p, "devices:manage") as uow:
        conn = uow.conn
        await check_devices(uow, [device_id])
        result = await conn.execute(
            sa.delete(t.auth_sets).where(t.auth_sets.c.id == aid, t.auth_sets.c.device_id == device_id)
        )
        if result.rowcount == 0:
            raise ApiError(404, "auth set not found")
        await _refresh_device_status(conn, device_id, now())
        await uow.audit("device.auth_set_delete", "device", device_id, {"auth_set": aid})
    return Response(204)
