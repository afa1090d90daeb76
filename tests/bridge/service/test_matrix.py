"""The generated permission matrix (issue 15): every management route x every role x own/other
organisation x in/out of the role's device groups.

Roles: the five built-in ones, and a group-limited variant of each that has device permissions
(the same permissions, limited to the group ``lab``). Each cell runs one request through the
router inside a group-commit batch that is rolled back afterwards, so every cell starts from the
same world. The expectation comes from SPEC below (route -> permission), written independently of
the handlers:

- permission not granted: 403, and nothing written (row counts of every table, the audit log);
- object in another organisation, or a device/deployment/group outside the role's groups:
  refused (403/404) or answered without effect — nothing written, nothing of it in the body;
- otherwise: 2xx, and a write leaves an audit entry.

Collections (lists, searches, exports) must never contain another organisation's objects, nor
devices/deployments outside a group-limited role's groups. SQLite only (a PostgreSQL run of
the same store code is in tests/bridge/store/test_tenancy.py); about 1,100 cells.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bridge.api import (
    ROUTES,
    ApiContext,
    Request,
    Router,
    Settings,
    build_router,
    create_deployment,
    create_user,
)
from bridge.api._auth import PAT_CLAIM, TENANT_CLAIM
from bridge.api._crypto import issue_token
from bridge.api._rollouts import parse_rollout
from bridge.artifacts import BlobStore
from bridge.service import BUILTIN_ROLES, GROUP_SCOPED, create_org, operator
from bridge.store import DEFAULT_ORG_ID, Store, cross_tenant, gov_tables, rollout_tables, tables, tenant_scope
from bridge.store._tenancy import reset_tenant, set_tenant
from tests.support.mender import make_artifact

MGMT = ("/api/management/", "/api/meshota/v1/management/")
PASSWORD = "matrix-password"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


# -- the world --------------------------------------------------------------------------------
@dataclass
class Org:
    id: str
    dev_in: str = ""
    dev_out: str = ""
    aid_in: str = ""
    aid_out: str = ""
    dep_in: str = ""
    dep_out: str = ""
    art: str = ""
    art_del: str = ""
    filter_id: str = ""
    victim: str = ""
    role: str = ""
    lab: str = "lab"
    prod: str = "prod"
    pat_of: dict[str, str] = field(default_factory=dict)  # user id -> a PAT id


@dataclass
class World:
    router: Router[ApiContext]
    store: Store
    a: Org
    b: Org
    # "role" / "role+pat" -> bearer token (login / personal access token) of its user in org A
    tokens: dict[str, str]
    users: dict[str, str]  # role name -> user id in org A
    artifact_bytes: bytes
    secret_ids: set[str]  # ids of org B: must never appear in an answer to org A


def _roles() -> list[tuple[str, list[str], list[str]]]:
    """(name, permissions, groups): the built-in roles and their group-limited variants."""
    out = []
    for name, role in BUILTIN_ROLES.items():
        out.append((name, sorted(role.permissions), []))
        if role.permissions & GROUP_SCOPED:
            out.append((f"{name}@lab", sorted(role.permissions), ["lab"]))
    return out


ROLES = _roles()


def _role_row(name: str, perms: list[str], groups: list[str]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "name": name, "description": "", "permissions": perms, "groups": groups,
            "created_ts": 1.0}  # fmt: skip


def _pat_row(pat: str, user_id: str) -> dict[str, Any]:
    return {"id": pat, "user_id": user_id, "name": "mine", "created_ts": 1.0, "expires_ts": 4e9}


async def _populate(store: Store, ctx: ApiContext, org: Org, art_fw: bytes, art_del: bytes) -> None:
    from bridge.api import store_artifact

    D, A, INV = tables.devices, tables.auth_sets, tables.inventory
    tag = org.id[:8]
    org.dev_in, org.dev_out = f"dev-in-{tag}", f"dev-out-{tag}"
    org.aid_in, org.aid_out = f"aid-in-{tag}", f"aid-out-{tag}"
    if org.id != DEFAULT_ORG_ID:
        org.lab, org.prod = f"lab-{tag}", f"prod-{tag}"
    with tenant_scope(org.id):
        async with store.transaction() as conn:
            for dev, aid, group in ((org.dev_in, org.aid_in, org.lab), (org.dev_out, org.aid_out, org.prod)):
                row = {"id": dev, "id_data_sha256": dev.ljust(64, "0"), "id_data": json.dumps({"mac": dev})}
                await conn.execute(
                    sa.insert(D).values(**row, status="accepted", created_ts=1.0, updated_ts=1.0)
                )
                await conn.execute(
                    sa.insert(A).values(id=aid, device_id=dev, pubkey=f"PEM {dev}", status="accepted", ts=1.0)
                )
                await conn.execute(
                    sa.insert(INV).values(
                        device_id=dev, scope="system", name="group", value=group, updated_ts=1.0
                    )
                )
        op = operator(org.id)
        org.art = await store_artifact(ctx, art_fw, "fw", by=op)
        org.art_del = await store_artifact(ctx, art_del, "unused", by=op)
        async with store.transaction() as conn:
            phased = parse_rollout({"retries": 1})  # a one-phase rollout: the rollout routes have one
            org.dep_in = await create_deployment(
                conn, name="in", artifact_name="fw-1", device_ids=[org.dev_in], rollout=phased
            )
            org.dep_out = await create_deployment(
                conn, name="out", artifact_name="fw-1", device_ids=[org.dev_out], rollout=phased
            )
            for dev in (org.dev_in, org.dev_out):
                config = {"device_id": dev, "configured": {"k": "v"}, "reported": {}, "updated_ts": 1.0}
                await conn.execute(sa.insert(rollout_tables.device_configs).values(**config))
                # the owner's remote-access grant, so that the diagnostics routes have one to act under
                grant = {"device_id": dev, "granted_by": "owner", "granted_ts": 1.0, "expires_ts": 4e9}
                grant["protocols"] = ["diagnostics", "filetransfer", "shell"]
                await conn.execute(sa.insert(gov_tables.remote_grants).values(**grant))
            log = [{"timestamp": "2026-01-01T00:00:00Z", "level": "info", "message": "hello"}]
            await conn.execute(sa.update(tables.device_deployments).values(log=log))
            org.filter_id = str(uuid.uuid4())
            terms = [{"scope": "identity", "attribute": "mac", "type": "$eq", "value": org.dev_in}]
            saved = {"id": org.filter_id, "name": "macs", "terms": terms, "created_ts": 1.0}
            await conn.execute(sa.insert(gov_tables.saved_filters).values(**saved))
            org.role = f"custom-{tag}"
            await conn.execute(sa.insert(gov_tables.roles), [_role_row(org.role, ["devices:read"], [])])
            org.victim = await create_user(
                conn, f"victim-{tag}@example.com", PASSWORD, ["RBAC_ROLE_OBSERVER"]
            )
            pat = str(uuid.uuid4())
            await conn.execute(sa.insert(gov_tables.access_tokens), [_pat_row(pat, org.victim)])
            org.pat_of[org.victim] = pat


async def _build(tmp: Path) -> World:
    store = Store.open(f"sqlite:///{tmp / 'matrix.sqlite'}")
    await store.migrate()
    ctx = await ApiContext.create(store, BlobStore(tmp / "blobs"), Settings(device_status_ttl=0.0))
    router = build_router(ctx)
    arts = {n: make_artifact(tmp, n).read_bytes() for n in ("fw-1", "fw-del", "fw-up")}
    async with store.transaction() as conn:
        b_id = (await create_org(conn, "org-b")).id
    a, b = Org(DEFAULT_ORG_ID), Org(b_id)
    for org in (a, b):
        await _populate(store, ctx, org, arts["fw-1"], arts["fw-del"])
    tokens, users = {}, {}
    with tenant_scope(a.id):
        async with store.transaction() as conn:
            for name, perms, groups in ROLES:
                if name not in BUILTIN_ROLES:
                    await conn.execute(sa.insert(gov_tables.roles), [_role_row(name, perms, groups)])
                uid = await create_user(conn, f"{name.lower()}@example.com", PASSWORD, [name])
                users[name] = uid
                pat = str(uuid.uuid4())
                await conn.execute(sa.insert(gov_tables.access_tokens), [_pat_row(pat, uid)])
                a.pat_of[uid] = pat
    for name, _, _ in ROLES:
        basic = base64.b64encode(f"{name.lower()}@example.com:{PASSWORD}".encode()).decode()
        r = await router.handle(
            Request(
                "POST", "/api/management/v1/useradm/auth/login", headers={"authorization": f"Basic {basic}"}
            )
        )
        assert r.status == 200, r.body
        tokens[name] = r.body.decode()
        # the same user's personal access token (what mender-cli --token-value sends)
        claims = {"sub": users[name], "mender.user": True, TENANT_CLAIM: a.id}
        claims[PAT_CLAIM] = a.pat_of[users[name]]
        tokens[f"{name}+pat"] = issue_token(router.context.secret, claims, time.time(), 3600)
    secret = {
        b.dev_in,
        b.dev_out,
        b.dep_in,
        b.dep_out,
        b.art,
        b.art_del,
        b.filter_id,
        b.victim,
        b.role,
        *b.pat_of.values(),
    }
    return World(router, store, a, b, tokens, users, arts["fw-up"], secret)


# -- the spec: route -> permission, and how to aim a request at a target ----------------------
# target: "in" (own organisation, a device/deployment/group in the role's groups), "out" (own
# organisation, outside them), "other" (another organisation's object), "all" (a collection)
Build = Callable[[World, str, str], tuple[str, str, Any]]  # (world, target, caller) -> (method, path, body)


@dataclass(frozen=True)
class Spec:
    permission: str
    build: Build
    device_scoped: bool = False  # the object is a device, deployment or device group
    collection: bool = False
    unlimited_only: bool = False  # beyond a group-limited role (a new device is in no group)
    creates_token: bool = False
    reads: bool = False  # a POST that only reads (search)
    no_other: bool = False  # the target is a name (a group's policy), not another organisation's object
    allowed_status: int | None = None  # when allowed: this status instead of 2xx (e.g. 409 no device link)


def _org(w: World, target: str) -> Org:
    return w.b if target == "other" else w.a


def _dev(w: World, t: str) -> str:
    return _org(w, t).dev_out if t == "out" else _org(w, t).dev_in


def _aid(w: World, t: str) -> str:
    return _org(w, t).aid_out if t == "out" else _org(w, t).aid_in


def _dep(w: World, t: str) -> str:
    return _org(w, t).dep_out if t == "out" else _org(w, t).dep_in


def _group(w: World, t: str) -> str:
    return _org(w, t).prod if t == "out" else _org(w, t).lab


UA, DEP, DA, INV, INV2 = (
    "/api/management/v1/useradm",
    "/api/management/v1/deployments",
    "/api/management/v2/devauth/devices",
    "/api/management/v1/inventory",
    "/api/management/v2/inventory",
)
NEW_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _pat(w: World, target: str, caller: str) -> str:
    """Another organisation's PAT, or the caller's own."""
    return w.b.pat_of[w.b.victim] if target == "other" else w.a.pat_of[w.users[_role_of(caller)]]


SPEC: dict[tuple[str, str], Spec] = {
    # useradm
    ("GET", f"{UA}/users"): Spec("users:read", lambda w, t, c: ("GET", f"{UA}/users", None), collection=True),
    ("POST", f"{UA}/users"): Spec(
        "users:manage",
        lambda w, t, c: (
            "POST",
            f"{UA}/users",
            {"email": "new@example.com", "password": "new-password", "roles": ["RBAC_ROLE_OBSERVER"]},
        ),
        collection=True,
    ),
    ("GET", f"{UA}/users/{{id}}"): Spec(
        "users:read", lambda w, t, c: ("GET", f"{UA}/users/{_org(w, t).victim}", None)
    ),
    ("PUT", f"{UA}/users/{{id}}"): Spec(
        "users:manage",
        lambda w, t, c: ("PUT", f"{UA}/users/{_org(w, t).victim}", {"roles": ["RBAC_ROLE_CI"]}),
    ),
    ("DELETE", f"{UA}/users/{{id}}"): Spec(
        "users:manage", lambda w, t, c: ("DELETE", f"{UA}/users/{_org(w, t).victim}", None)
    ),
    ("GET", f"{UA}/roles"): Spec("users:read", lambda w, t, c: ("GET", f"{UA}/roles", None), collection=True),
    ("POST", f"{UA}/roles"): Spec(
        "users:manage",
        lambda w, t, c: (
            "POST",
            f"{UA}/roles",
            {"name": "fresh", "permissions": ["devices:read"], "groups": ["lab"]},
        ),
        collection=True,
    ),
    ("GET", f"{UA}/roles/{{name}}"): Spec(
        "users:read", lambda w, t, c: ("GET", f"{UA}/roles/{_org(w, t).role}", None)
    ),
    ("PUT", f"{UA}/roles/{{name}}"): Spec(
        "users:manage",
        lambda w, t, c: ("PUT", f"{UA}/roles/{_org(w, t).role}", {"permissions": ["artifacts:read"]}),
    ),
    ("DELETE", f"{UA}/roles/{{name}}"): Spec(
        "users:manage", lambda w, t, c: ("DELETE", f"{UA}/roles/{_org(w, t).role}", None)
    ),
    ("POST", f"{UA}/settings/tokens"): Spec(
        "tokens:manage",
        lambda w, t, c: ("POST", f"{UA}/settings/tokens", {"name": "ci", "expires_in": 3600}),
        creates_token=True,
        collection=True,
    ),
    ("GET", f"{UA}/settings/tokens"): Spec(
        "tokens:manage", lambda w, t, c: ("GET", f"{UA}/settings/tokens", None), collection=True
    ),
    ("DELETE", f"{UA}/settings/tokens/{{id}}"): Spec(
        "tokens:manage",
        lambda w, t, c: (
            "DELETE",
            f"{UA}/settings/tokens/{_pat(w, t, c)}",
            None,
        ),
    ),
    # auditlogs
    ("GET", "/api/management/v1/auditlogs/logs"): Spec(
        "audit:read", lambda w, t, c: ("GET", "/api/management/v1/auditlogs/logs", None), collection=True
    ),
    ("GET", "/api/management/v1/auditlogs/logs/export"): Spec(
        "audit:read",
        lambda w, t, c: ("GET", "/api/management/v1/auditlogs/logs/export", None),
        collection=True,
    ),
    # meshota
    ("GET", "/api/meshota/v1/management/chunk_map_key"): Spec(
        "artifacts:read",
        lambda w, t, c: ("GET", "/api/meshota/v1/management/chunk_map_key", None),
        collection=True,
    ),
    # artifacts
    ("POST", f"{DEP}/artifacts"): Spec(
        "artifacts:upload", lambda w, t, c: ("POST", f"{DEP}/artifacts", w.artifact_bytes), collection=True
    ),
    ("GET", f"{DEP}/artifacts"): Spec(
        "artifacts:read", lambda w, t, c: ("GET", f"{DEP}/artifacts", None), collection=True
    ),
    ("GET", f"{DEP}/artifacts/{{id}}"): Spec(
        "artifacts:read", lambda w, t, c: ("GET", f"{DEP}/artifacts/{_org(w, t).art}", None)
    ),
    ("DELETE", f"{DEP}/artifacts/{{id}}"): Spec(
        "artifacts:delete", lambda w, t, c: ("DELETE", f"{DEP}/artifacts/{_org(w, t).art_del}", None)
    ),
    ("GET", f"{DEP}/artifacts/{{id}}/download"): Spec(
        "artifacts:read", lambda w, t, c: ("GET", f"{DEP}/artifacts/{_org(w, t).art}/download", None)
    ),
    # deployments
    ("POST", f"{DEP}/deployments"): Spec(
        "deployments:manage",
        lambda w, t, c: (
            "POST",
            f"{DEP}/deployments",
            {"name": "n", "artifact_name": "fw-1", "devices": [_dev(w, t)]},
        ),
        device_scoped=True,
    ),
    ("GET", f"{DEP}/deployments"): Spec(
        "deployments:read",
        lambda w, t, c: ("GET", f"{DEP}/deployments", None),
        device_scoped=True,
        collection=True,
    ),
    ("POST", f"{DEP}/deployments/group/{{name}}"): Spec(
        "deployments:manage",
        lambda w, t, c: (
            "POST",
            f"{DEP}/deployments/group/{_group(w, t)}",
            {"name": "g", "artifact_name": "fw-1"},
        ),
        device_scoped=True,
    ),
    ("GET", f"{DEP}/deployments/{{id}}"): Spec(
        "deployments:read",
        lambda w, t, c: ("GET", f"{DEP}/deployments/{_dep(w, t)}", None),
        device_scoped=True,
    ),
    ("PUT", f"{DEP}/deployments/{{id}}/status"): Spec(
        "deployments:manage",
        lambda w, t, c: ("PUT", f"{DEP}/deployments/{_dep(w, t)}/status", {"status": "aborted"}),
        device_scoped=True,
    ),
    ("GET", f"{DEP}/deployments/{{id}}/statistics"): Spec(
        "deployments:read",
        lambda w, t, c: ("GET", f"{DEP}/deployments/{_dep(w, t)}/statistics", None),
        device_scoped=True,
    ),
    ("GET", f"{DEP}/deployments/{{id}}/devices"): Spec(
        "deployments:read",
        lambda w, t, c: ("GET", f"{DEP}/deployments/{_dep(w, t)}/devices", None),
        device_scoped=True,
    ),
    ("GET", f"{DEP}/deployments/{{id}}/devices/{{device_id}}/log"): Spec(
        "deployments:read",
        lambda w, t, c: ("GET", f"{DEP}/deployments/{_dep(w, t)}/devices/{_dev(w, t)}/log", None),
        device_scoped=True,
    ),
    # devauth
    ("GET", DA): Spec("devices:read", lambda w, t, c: ("GET", DA, None), device_scoped=True, collection=True),
    ("POST", DA): Spec(
        "devices:manage",
        lambda w, t, c: ("POST", DA, {"identity_data": {"mac": "new"}, "pubkey": NEW_KEY}),
        collection=True,
        unlimited_only=True,
    ),
    ("GET", f"{DA}/{{id}}"): Spec(
        "devices:read", lambda w, t, c: ("GET", f"{DA}/{_dev(w, t)}", None), device_scoped=True
    ),
    ("DELETE", f"{DA}/{{id}}"): Spec(
        "devices:manage", lambda w, t, c: ("DELETE", f"{DA}/{_dev(w, t)}", None), device_scoped=True
    ),
    ("PUT", f"{DA}/{{id}}/auth/{{aid}}/status"): Spec(
        "devices:manage",
        lambda w, t, c: ("PUT", f"{DA}/{_dev(w, t)}/auth/{_aid(w, t)}/status", {"status": "rejected"}),
        device_scoped=True,
    ),
    ("DELETE", f"{DA}/{{id}}/auth/{{aid}}"): Spec(
        "devices:manage",
        lambda w, t, c: ("DELETE", f"{DA}/{_dev(w, t)}/auth/{_aid(w, t)}", None),
        device_scoped=True,
    ),
    # inventory
    ("GET", f"{INV}/devices"): Spec(
        "devices:read", lambda w, t, c: ("GET", f"{INV}/devices", None), device_scoped=True, collection=True
    ),
    ("GET", f"{INV}/devices/{{id}}"): Spec(
        "devices:read", lambda w, t, c: ("GET", f"{INV}/devices/{_dev(w, t)}", None), device_scoped=True
    ),
    ("PUT", f"{INV}/devices/{{id}}/group"): Spec(
        "devices:manage",
        lambda w, t, c: ("PUT", f"{INV}/devices/{_dev(w, t)}/group", {"group": "lab"}),
        device_scoped=True,
    ),
    ("DELETE", f"{INV}/devices/{{id}}/group/{{name}}"): Spec(
        "devices:manage",
        lambda w, t, c: ("DELETE", f"{INV}/devices/{_dev(w, t)}/group/{_group(w, t)}", None),
        device_scoped=True,
    ),
    ("GET", f"{INV}/groups"): Spec(
        "devices:read", lambda w, t, c: ("GET", f"{INV}/groups", None), device_scoped=True, collection=True
    ),
    ("GET", f"{INV}/groups/{{name}}/devices"): Spec(
        "devices:read",
        lambda w, t, c: ("GET", f"{INV}/groups/{_group(w, t)}/devices", None),
        device_scoped=True,
    ),
    ("PATCH", f"{INV}/groups/{{name}}/devices"): Spec(
        "devices:manage",
        lambda w, t, c: ("PATCH", f"{INV}/groups/{_group(w, t)}/devices", [_dev(w, t)]),
        device_scoped=True,
    ),
    ("DELETE", f"{INV}/groups/{{name}}/devices"): Spec(
        "devices:manage",
        lambda w, t, c: ("DELETE", f"{INV}/groups/{_group(w, t)}/devices", [_dev(w, t)]),
        device_scoped=True,
    ),
    ("POST", f"{INV2}/filters/search"): Spec(
        "devices:read",
        lambda w, t, c: ("POST", f"{INV2}/filters/search", {"filters": []}),
        reads=True,
        device_scoped=True,
        collection=True,
    ),
    ("POST", f"{INV2}/filters"): Spec(
        "devices:manage",
        lambda w, t, c: (
            "POST",
            f"{INV2}/filters",
            {
                "name": "fresh",
                "terms": [{"scope": "system", "attribute": "group", "type": "$eq", "value": "lab"}],
            },
        ),
        collection=True,
    ),
    ("GET", f"{INV2}/filters"): Spec(
        "devices:read", lambda w, t, c: ("GET", f"{INV2}/filters", None), collection=True
    ),
    ("GET", f"{INV2}/filters/{{id}}"): Spec(
        "devices:read", lambda w, t, c: ("GET", f"{INV2}/filters/{_org(w, t).filter_id}", None)
    ),
    ("DELETE", f"{INV2}/filters/{{id}}"): Spec(
        "devices:manage", lambda w, t, c: ("DELETE", f"{INV2}/filters/{_org(w, t).filter_id}", None)
    ),
}


MM = "/api/meshota/v1/management"
DCFG = "/api/management/v1/deviceconfig/configurations/device"
DCON = "/api/management/v1/deviceconnect/devices"
SPEC.update(
    {
        ("GET", f"{MM}/rollouts/{{id}}"): Spec(
            "deployments:read",
            lambda w, t, c: ("GET", f"{MM}/rollouts/{_dep(w, t)}", None),
            device_scoped=True,
        ),
        ("POST", f"{MM}/rollouts/{{id}}/{{action}}"): Spec(
            "deployments:manage",
            lambda w, t, c: ("POST", f"{MM}/rollouts/{_dep(w, t)}/pause", None),
            device_scoped=True,
        ),
        ("GET", f"{MM}/policies/tenant"): Spec(
            "deployments:read", lambda w, t, c: ("GET", f"{MM}/policies/tenant", None), collection=True
        ),
        ("PUT", f"{MM}/policies/tenant"): Spec(
            "deployments:manage",
            lambda w, t, c: ("PUT", f"{MM}/policies/tenant", {"checkin_interval": 600}),
            collection=True,
            unlimited_only=True,
        ),
        ("GET", f"{MM}/policies/groups/{{name}}"): Spec(
            "deployments:read",
            lambda w, t, c: ("GET", f"{MM}/policies/groups/{_group(w, t)}", None),
            device_scoped=True,
            no_other=True,
        ),
        ("PUT", f"{MM}/policies/groups/{{name}}"): Spec(
            "deployments:manage",
            lambda w, t, c: ("PUT", f"{MM}/policies/groups/{_group(w, t)}", {"checkin_interval": 600}),
            device_scoped=True,
            no_other=True,
        ),
        ("DELETE", f"{MM}/policies/groups/{{name}}"): Spec(
            "deployments:manage",
            lambda w, t, c: ("DELETE", f"{MM}/policies/groups/{_group(w, t)}", None),
            device_scoped=True,
            no_other=True,
            reads=True,  # nothing to delete: no audit entry
        ),
        # aggregates for the admin UI (bridge/api/_fleet_summary.py)
        ("GET", f"{MM}/fleet/summary"): Spec(
            "devices:read", lambda w, t, c: ("GET", f"{MM}/fleet/summary", None), collection=True
        ),
        ("GET", f"{MM}/mesh"): Spec(
            "devices:read", lambda w, t, c: ("GET", f"{MM}/mesh", None), collection=True
        ),
        ("GET", f"{MM}/devices/{{id}}/deployments"): Spec(
            "deployments:read",
            lambda w, t, c: ("GET", f"{MM}/devices/{_dev(w, t)}/deployments", None),
            device_scoped=True,
        ),
        ("GET", f"{DCFG}/{{id}}"): Spec(
            "deviceconfig:read", lambda w, t, c: ("GET", f"{DCFG}/{_dev(w, t)}", None), device_scoped=True
        ),
        ("PUT", f"{DCFG}/{{id}}"): Spec(
            "deviceconfig:manage",
            lambda w, t, c: ("PUT", f"{DCFG}/{_dev(w, t)}", {"k": "w"}),
            device_scoped=True,
        ),
        ("POST", f"{DCFG}/{{id}}/deploy"): Spec(
            "deviceconfig:manage",
            lambda w, t, c: ("POST", f"{DCFG}/{_dev(w, t)}/deploy", {}),
            device_scoped=True,
        ),
        ("GET", f"{MM}/remote_access/devices/{{id}}"): Spec(
            "devices:read",
            lambda w, t, c: ("GET", f"{MM}/remote_access/devices/{_dev(w, t)}", None),
            device_scoped=True,
        ),
        ("PUT", f"{MM}/remote_access/devices/{{id}}"): Spec(
            "remoteaccess:grant",
            lambda w, t, c: ("PUT", f"{MM}/remote_access/devices/{_dev(w, t)}", {"duration": 60}),
            device_scoped=True,
        ),
        ("DELETE", f"{MM}/remote_access/devices/{{id}}"): Spec(
            "remoteaccess:grant",
            lambda w, t, c: ("DELETE", f"{MM}/remote_access/devices/{_dev(w, t)}", None),
            device_scoped=True,
        ),
        ("POST", f"{MM}/remote_access/devices/{{id}}/diagnostics"): Spec(
            "remoteaccess:use",
            lambda w, t, c: (
                "POST",
                f"{MM}/remote_access/devices/{_dev(w, t)}/diagnostics",
                {"command": "ping"},
            ),
            device_scoped=True,
        ),
        # the file routes pass the permission and grant checks (audited), then find no device link
        ("GET", f"{DCON}/{{id}}"): Spec(
            "devices:read", lambda w, t, c: ("GET", f"{DCON}/{_dev(w, t)}", None), device_scoped=True
        ),
        ("GET", f"{DCON}/{{id}}/download"): Spec(
            "remoteaccess:use",
            lambda w, t, c: ("GET", f"{DCON}/{_dev(w, t)}/download", None),
            device_scoped=True,
            allowed_status=409,
        ),
        ("PUT", f"{DCON}/{{id}}/upload"): Spec(
            "remoteaccess:use",
            lambda w, t, c: ("PUT", f"{DCON}/{_dev(w, t)}/upload", {"path": "/tmp/x"}),
            device_scoped=True,
            allowed_status=409,
        ),
        ("GET", f"{MM}/remote_access/devices/{{id}}/diagnostics"): Spec(
            "remoteaccess:use",
            lambda w, t, c: ("GET", f"{MM}/remote_access/devices/{_dev(w, t)}/diagnostics", None),
            device_scoped=True,
        ),
    }
)


def test_the_spec_covers_every_management_route() -> None:
    routes = {
        (r.method, r.pattern)
        for r in ROUTES
        if r.pattern.startswith(MGMT) and not r.pattern.endswith("/auth/login")
    }
    assert routes == set(SPEC)


# -- the cells -------------------------------------------------------------------------------
def _cells() -> Iterator[tuple[tuple[str, str], str, str]]:
    for key, spec in SPEC.items():
        targets = (
            ("all",) if spec.collection else ("in", "out", "other") if spec.device_scoped else ("in", "other")
        )
        if spec.no_other:
            targets = tuple(t for t in targets if t != "other")
        for role, _, _ in ROLES:
            for caller in (role, f"{role}+pat"):
                for target in targets:
                    yield key, caller, target


def _role_of(caller: str) -> str:
    return caller.removesuffix("+pat")


def _expect(spec: Spec, caller: str, target: str) -> str:
    perms, groups = next((p, g) for n, p, g in ROLES if n == _role_of(caller))
    if spec.permission not in perms:
        return "deny"
    if caller.endswith("+pat") and spec.creates_token:
        return "deny"  # a personal access token cannot make another
    if target == "other":
        return "hidden"
    limited = bool(groups) and spec.permission in GROUP_SCOPED
    if limited and spec.device_scoped and target == "out":
        return "hidden"
    if limited and spec.unlimited_only:
        return "hidden"
    return "allow"


def _request(w: World, method: str, path: str, body: Any, token: str) -> Request:
    headers = {"authorization": f"Bearer {token}"}
    if isinstance(body, bytes):  # the artifact upload
        boundary = "matrixboundary"
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="a.mender"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers["content-type"] = f"multipart/form-data; boundary={boundary}"
        return Request(method, path, headers=headers, body=data)
    raw = b"" if body is None else json.dumps(body).encode()
    if raw:
        headers["content-type"] = "application/json"
    return Request(method, path, headers=headers, body=raw)


COUNTED = [t for t in tables.metadata.sorted_tables]


async def _counts(conn: Any) -> dict[str, int]:
    """Row counts and state digests, read on the cell's own (uncommitted) transaction."""
    with cross_tenant():
        if True:
            out = {}
            for table in COUNTED:
                out[table.name] = int(
                    (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
                )
            # a changed row is a write too: the audit head and every updated_ts/status would show it
            out["audit_head"] = hash(tuple(await conn.execute(sa.select(gov_tables.audit_heads))))
            out["state"] = hash(
                tuple(await conn.execute(sa.select(tables.devices.c.status, tables.devices.c.updated_ts)))
            )
            out["dd"] = hash(tuple(await conn.execute(sa.select(tables.device_deployments.c.status))))
            out["roles"] = hash(tuple(await conn.execute(sa.select(gov_tables.user_roles))))
            out["inv"] = hash(
                tuple(await conn.execute(sa.select(tables.inventory.c.device_id, tables.inventory.c.value)))
            )
            out["custom"] = hash(tuple(str(r) for r in await conn.execute(sa.select(gov_tables.roles))))
            # issue 16's state: a rollout paused, a policy or a configuration replaced in place
            for table in (
                rollout_tables.rollouts,
                rollout_tables.fleet_policies,
                rollout_tables.device_configs,
            ):
                out[f"{table.name}:rows"] = hash(tuple(str(r) for r in await conn.execute(sa.select(table))))
            return out


async def _run_cell(w: World, key: tuple[str, str], role: str, target: str) -> str | None:
    """None if the cell holds, else what went wrong."""
    spec = SPEC[key]
    method, path, body = spec.build(w, target, role)
    expect = _expect(spec, role, target)
    async with w.store.batch() as batch:
        before = await _counts(batch.conn)
        token = set_tenant(None)  # as an adapter calls the router: no organisation until authenticated
        try:
            resp = await w.router.handle(_request(w, method, path, body, w.tokens[role]))
        finally:
            reset_tenant(token)
        after = await _counts(batch.conn)
        batch.failed = True  # roll the cell back
    text = resp.body.decode("utf-8", "replace") if isinstance(resp.body, bytes) else ""
    label = f"{method} {key[1]} as {role} on {target}: {resp.status} {text[:160]!r}"
    # a success must show nothing of another organisation (an error may echo the caller's own input)
    leaked = [s for s in w.secret_ids if s in text] if resp.status < 400 else []
    if leaked:
        return f"{label}: leaks another organisation's {leaked}"
    if expect == "deny":
        if resp.status != 403 or after != before:
            return f"{label}: expected 403 and nothing written"
    elif expect == "hidden":
        if after != before:
            return f"{label}: wrote on a refused/hidden object"
        if resp.status not in (403, 404) and not 200 <= resp.status < 300:
            return f"{label}: expected refusal or no effect"
        if target == "out" and (_dev(w, "out") in text or _dep(w, "out") in text):
            return f"{label}: shows a device outside the role's groups"
    else:
        if spec.allowed_status is not None:
            if resp.status != spec.allowed_status:
                return f"{label}: expected {spec.allowed_status} past the permission check"
        elif not 200 <= resp.status < 300:
            return f"{label}: expected success"
        if method in WRITES and not spec.reads and after["audit_log"] <= before["audit_log"]:
            return f"{label}: a write without an audit entry"
        limited = any(n == _role_of(role) and g for n, _, g in ROLES)
        if (
            limited
            and spec.device_scoped
            and spec.collection
            and (w.a.dev_out in text or w.a.dep_out in text)
        ):
            return f"{label}: a collection shows what is outside the role's groups"
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, World]]:
    loop = asyncio.new_event_loop()
    w = loop.run_until_complete(_build(tmp_path_factory.mktemp("matrix")))
    try:
        yield loop, w
    finally:
        loop.run_until_complete(w.store.close())
        loop.close()


def test_matrix(world: tuple[asyncio.AbstractEventLoop, World]) -> None:
    loop, w = world
    cells = list(_cells())

    async def run_all() -> list[str]:
        failures = []
        for key, role, target in cells:
            problem = await _run_cell(w, key, role, target)
            if problem:
                failures.append(problem)
        return failures

    failures = loop.run_until_complete(run_all())
    outcomes = {
        e: sum(1 for k, r, t in cells if _expect(SPEC[k], r, t) == e) for e in ("allow", "deny", "hidden")
    }
    print(f"{len(cells)} cells: {outcomes}")
    assert not failures, f"{len(failures)} of {len(cells)} cells fail:\n" + "\n".join(failures[:40])
    assert len(cells) > 1000
    assert all(outcomes.values())  # every kind of cell occurs: the matrix can fail
