"""Organisations, roles and groups through the router (in process; SQLite and PostgreSQL):
device routes across organisations, how a device finds its organisation (tenant token,
transport identity), deny by default, custom group-limited roles made over the API, dynamic
groups (saved filters) as deployment targets, the operator principal of ``meshota admin``."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.api import (
    ApiContext,
    Request,
    Response,
    Router,
    Settings,
    build_router,
    create_user,
    store_artifact,
)
from bridge.artifacts import BlobStore
from bridge.service import Denied, Principal, authorize, create_org, map_identity, operator
from bridge.store import DEFAULT_ORG_ID, Store, cross_tenant, gov_tables, tables, tenant_scope
from tests.support.mender import Db, auth_body, device_key, make_artifact

PASSWORD = "governance-pw"


@dataclass
class Api:
    router: Router[ApiContext]
    store: Store
    ctx: ApiContext

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, **kw: Any
    ) -> Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["authorization"] = f"Bearer {token}"
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        return await self.router.handle(Request(method, path, headers=headers, body=raw, **kw))

    async def login(self, email: str) -> str:
        basic = base64.b64encode(f"{email}:{PASSWORD}".encode()).decode()
        r = await self.call(
            "POST", "/api/management/v1/useradm/auth/login", headers={"authorization": f"Basic {basic}"}
        )
        assert r.status == 200, r.body
        return r.body.decode()


@asynccontextmanager
async def api_on(db: Db, tmp: Path) -> AsyncIterator[Api]:
    store = Store.open(db.url, schema=db.schema)
    await store.migrate()
    ctx = await ApiContext.create(store, BlobStore(tmp / "blobs"), Settings(device_status_ttl=0.0))
    try:
        yield Api(build_router(ctx), store, ctx)
    finally:
        await store.close()


async def _user(api: Api, org: str, email: str, roles: list[str]) -> str:
    with tenant_scope(org):
        async with api.store.transaction() as conn:
            await create_user(conn, email, PASSWORD, roles)
    return await api.login(email)


async def _accept_all(api: Api, token: str) -> list[str]:
    r = await api.call("GET", "/api/management/v2/devauth/devices", token)
    ids = []
    for dev in json.loads(r.body):
        aid = dev["auth_sets"][0]["id"]
        put = await api.call(
            "PUT",
            f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
            token,
            {"status": "accepted"},
        )
        assert put.status == 204, put.body
        ids.append(dev["id"])
    return ids


def test_devices_find_their_organisation_and_stay_in_it(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        async with api_on(db, tmp_path) as api:
            async with api.store.transaction() as conn:
                acme = await create_org(conn, "acme")
                other = await create_org(conn, "other")
                await map_identity(conn, "node-7", acme.id)
            assert acme.tenant_token
            home = await _user(api, DEFAULT_ORG_ID, "home@example.com", ["RBAC_ROLE_PERMIT_ALL"])
            theirs = await _user(api, acme.id, "acme@example.com", ["RBAC_ROLE_PERMIT_ALL"])
            # a tenant token names the organisation; an unknown one is refused
            key_a, key_h = device_key("ecdsa"), device_key("ecdsa")
            for key, mac, token in ((key_a, "aa", acme.tenant_token), (key_h, "hh", "")):
                body, sig = auth_body(key, mac, token)
                r = await api.call(
                    "POST",
                    "/api/devices/v1/authentication/auth_requests",
                    body=body,
                    headers={"x-men-signature": sig},
                )
                assert r.status == 401  # pending
            body, sig = auth_body(device_key("ecdsa"), "zz", "mot_not-a-token")
            bad = await api.call(
                "POST",
                "/api/devices/v1/authentication/auth_requests",
                body=body,
                headers={"x-men-signature": sig},
            )
            assert bad.status == 401 and b"unknown tenant token" in bad.body
            # a transport identity mapped to acme enrols there (over MQTT: the gateway stamps it)
            body, sig = auth_body(device_key("ecdsa"), "mm")
            over = await api.call(
                "POST",
                "/api/devices/v1/authentication/auth_requests",
                body=body,
                headers={"x-men-signature": sig},
                identity="node-7",
            )
            assert over.status == 401
            # ...and a tenant token naming another organisation than the identity's is refused
            assert other.tenant_token
            body, sig = auth_body(device_key("ecdsa"), "mx", other.tenant_token)
            clash = await api.call(
                "POST",
                "/api/devices/v1/authentication/auth_requests",
                body=body,
                headers={"x-men-signature": sig},
                identity="node-7",
            )
            assert clash.status == 403
            acme_ids = await _accept_all(api, theirs)
            home_ids = await _accept_all(api, home)
            assert len(acme_ids) == 2 and len(home_ids) == 1
            # each device's token works in its own organisation only
            tokens = {}
            for key, mac, token, dev in ((key_a, "aa", acme.tenant_token, "acme"), (key_h, "hh", "", "home")):
                body, sig = auth_body(key, mac, token)
                r = await api.call(
                    "POST",
                    "/api/devices/v1/authentication/auth_requests",
                    body=body,
                    headers={"x-men-signature": sig},
                )
                assert r.status == 200
                tokens[dev] = r.body.decode()
            art = make_artifact(tmp_path, "fw-home")
            await store_artifact(api.ctx, art.read_bytes(), "home fw", by=operator(DEFAULT_ORG_ID))
            [home_dev] = home_ids
            dep = await api.call(
                "POST",
                "/api/management/v1/deployments/deployments",
                home,
                {"name": "d", "artifact_name": "fw-home", "devices": [home_dev]},
            )
            assert dep.status == 201
            dep_id = dict(dep.headers)["Location"].rsplit("/", 1)[1]
            nxt = "/api/devices/v1/deployments/device/deployments/next"
            q = {"artifact_name": ["a"], "device_type": ["test-device"]}
            assert (await api.call("GET", nxt, tokens["home"], query=q)).status == 200
            assert (
                await api.call("GET", nxt, tokens["acme"], query=q)
            ).status == 204  # nothing for acme's device
            status = f"/api/devices/v1/deployments/device/deployments/{dep_id}/status"
            assert (await api.call("PUT", status, tokens["acme"], {"status": "downloading"})).status == 404
            assert (await api.call("PUT", status, tokens["home"], {"status": "downloading"})).status == 204
            # acme cannot deploy the default organisation's artifact, nor to its device
            cross = await api.call(
                "POST",
                "/api/management/v1/deployments/deployments",
                theirs,
                {"name": "x", "artifact_name": "fw-home", "devices": [acme_ids[0]]},
            )
            assert cross.status == 422
            cross = await api.call(
                "POST",
                "/api/management/v1/deployments/deployments",
                theirs,
                {"name": "x", "artifact_name": "fw-home", "devices": [home_dev]},
            )
            assert cross.status == 404

    asyncio.run(run())


def test_deny_by_default_and_roles_over_the_api(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        async with api_on(db, tmp_path) as api:
            admin = await _user(api, DEFAULT_ORG_ID, "admin@example.com", ["RBAC_ROLE_PERMIT_ALL"])
            nobody = await _user(api, DEFAULT_ORG_ID, "nobody@example.com", [])
            for path in (
                "/api/management/v2/devauth/devices",
                "/api/management/v1/deployments/artifacts",
                "/api/management/v1/useradm/users",
                "/api/management/v1/auditlogs/logs",
            ):
                assert (await api.call("GET", path, nobody)).status == 403, path
            # two devices, in groups lab and prod
            for mac in ("l1", "p1"):
                body, sig = auth_body(device_key("ecdsa"), mac)
                await api.call(
                    "POST",
                    "/api/devices/v1/authentication/auth_requests",
                    body=body,
                    headers={"x-men-signature": sig},
                )
            lab, prod = await _accept_all(api, admin)
            for dev, group in ((lab, "lab"), (prod, "prod")):
                r = await api.call(
                    "PUT", f"/api/management/v1/inventory/devices/{dev}/group", admin, {"group": group}
                )
                assert r.status == 204
            # a custom role limited to lab, made and given over the API (Mender useradm shapes)
            r = await api.call(
                "POST",
                "/api/management/v1/useradm/roles",
                admin,
                {"name": "lab-ops", "permissions": ["devices:read", "devices:manage"], "groups": ["lab"]},
            )
            assert r.status == 201, r.body
            bad = await api.call(
                "POST", "/api/management/v1/useradm/roles", admin, {"name": "x", "permissions": ["fly"]}
            )
            assert bad.status == 400
            r = await api.call(
                "POST",
                "/api/management/v1/useradm/users",
                admin,
                {"email": "lab@example.com", "password": PASSWORD, "roles": ["lab-ops"]},
            )
            assert r.status == 201
            users = json.loads((await api.call("GET", "/api/management/v1/useradm/users", admin)).body)
            assert next(u for u in users if u["email"] == "lab@example.com")["roles"] == ["lab-ops"]
            labber = await api.login("lab@example.com")
            seen = json.loads((await api.call("GET", "/api/management/v2/devauth/devices", labber)).body)
            assert [d["id"] for d in seen] == [lab]
            assert (await api.call("GET", f"/api/management/v2/devauth/devices/{prod}", labber)).status == 404
            assert (
                await api.call("DELETE", f"/api/management/v2/devauth/devices/{prod}", labber)
            ).status == 404
            assert (await api.call("GET", "/api/management/v1/deployments/artifacts", labber)).status == 403
            groups = json.loads((await api.call("GET", "/api/management/v1/inventory/groups", labber)).body)
            assert groups == ["lab"]
            # moving its device into a group outside its reach: refused
            r = await api.call(
                "PUT", f"/api/management/v1/inventory/devices/{lab}/group", labber, {"group": "prod"}
            )
            assert r.status == 403
            # the admin narrows the user to read-only: PUT /users/{id} replaces the roles
            uid = next(u["id"] for u in users if u["email"] == "lab@example.com")
            r = await api.call(
                "PUT", f"/api/management/v1/useradm/users/{uid}", admin, {"roles": ["RBAC_ROLE_OBSERVER"]}
            )
            assert r.status == 204
            assert (
                await api.call("DELETE", f"/api/management/v2/devauth/devices/{lab}", labber)
            ).status == 403

    asyncio.run(run())


def test_a_dynamic_group_is_a_deployment_target_within_the_role(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        async with api_on(db, tmp_path) as api:
            admin = await _user(api, DEFAULT_ORG_ID, "admin@example.com", ["RBAC_ROLE_PERMIT_ALL"])
            for mac in ("r1", "r2", "r3"):
                body, sig = auth_body(device_key("ecdsa"), mac)
                await api.call(
                    "POST",
                    "/api/devices/v1/authentication/auth_requests",
                    body=body,
                    headers={"x-men-signature": sig},
                )
            devs = await _accept_all(api, admin)
            for dev, group in zip(devs, ("lab", "lab", "prod"), strict=True):
                await api.call(
                    "PUT", f"/api/management/v1/inventory/devices/{dev}/group", admin, {"group": group}
                )
            terms = [{"scope": "identity", "attribute": "mac", "type": "$in", "value": ["r1", "r3"]}]
            r = await api.call(
                "POST", "/api/management/v2/inventory/filters", admin, {"name": "r1-or-r3", "terms": terms}
            )
            assert r.status == 201, r.body
            filter_id = dict(r.headers)["Location"].rsplit("/", 1)[1]
            await store_artifact(
                api.ctx, make_artifact(tmp_path, "fw-dyn").read_bytes(), "", by=operator(DEFAULT_ORG_ID)
            )
            r = await api.call(
                "POST",
                "/api/management/v1/deployments/deployments",
                admin,
                {"name": "dyn", "artifact_name": "fw-dyn", "filter_id": filter_id},
            )
            assert r.status == 201, r.body
            dep = dict(r.headers)["Location"].rsplit("/", 1)[1]
            got = json.loads(
                (
                    await api.call("GET", f"/api/management/v1/deployments/deployments/{dep}/devices", admin)
                ).body
            )
            assert sorted(d["id"] for d in got) == sorted([devs[0], devs[2]])
            # a release manager limited to lab deploys the same filter: only its lab member
            await api.call(
                "POST",
                "/api/management/v1/useradm/roles",
                admin,
                {
                    "name": "lab-rel",
                    "permissions": ["deployments:manage", "deployments:read", "devices:read"],
                    "groups": ["lab"],
                },
            )
            rel = await _user(api, DEFAULT_ORG_ID, "rel@example.com", ["lab-rel"])
            r = await api.call(
                "POST",
                "/api/management/v1/deployments/deployments",
                rel,
                {"name": "dyn2", "artifact_name": "fw-dyn", "filter_id": filter_id},
            )
            assert r.status == 201, r.body
            dep2 = dict(r.headers)["Location"].rsplit("/", 1)[1]
            got = json.loads(
                (
                    await api.call("GET", f"/api/management/v1/deployments/deployments/{dep2}/devices", rel)
                ).body
            )
            assert [d["id"] for d in got] == [devs[0]]
            # the admin's deployment reaches prod: the lab release manager does not see it
            assert (
                await api.call("GET", f"/api/management/v1/deployments/deployments/{dep}", rel)
            ).status == 404
            listed = json.loads(
                (await api.call("GET", "/api/management/v1/deployments/deployments", rel)).body
            )
            assert [d["id"] for d in listed] == [dep2]

    asyncio.run(run())


def test_authorize_denies_by_default() -> None:
    nobody = Principal.of("user", "u", "u@example.com", DEFAULT_ORG_ID, ())
    with pytest.raises(Denied):
        authorize(nobody, "devices:read")
    with pytest.raises(Denied, match="unknown permission"):
        authorize(operator(DEFAULT_ORG_ID), "devices:fly")
    assert authorize(operator(DEFAULT_ORG_ID), "devices:manage", groups=()).groups is None


def test_the_operator_principal_is_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``meshota admin`` writes through the service layer: its changes are in the audit log."""
    from meshota.cli.server import admin_main

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert admin_main(["create-org", "--db", db, "acme"]) == 0
    out = capsys.readouterr().out
    assert "tenant token (shown once" in out
    pw = tmp_path / "pw"
    pw.write_text("operator-password\n")
    assert (
        admin_main(
            [
                "create-user",
                "--db",
                db,
                "--org",
                "acme",
                "--role",
                "RBAC_ROLE_OBSERVER",
                "--username",
                "viewer@acme.example",
                "--password-file",
                str(pw),
            ]
        )
        == 0
    )
    assert admin_main(["map-identity", "--db", db, "--org", "acme", "node-1"]) == 0
    assert (
        admin_main(
            ["create-user", "--db", db, "--org", "nowhere", "--username", "x@y", "--password-file", str(pw)]
        )
        == 1
    )
    capsys.readouterr()

    async def entries() -> list[tuple[str, str]]:
        store = Store.open(db)
        try:
            with cross_tenant():
                async with store.read() as conn:
                    a = gov_tables.audit_log
                    rows = await conn.execute(sa.select(a.c.action, a.c.actor_type).order_by(a.c.seq))
                    roles = list(await conn.execute(sa.select(gov_tables.user_roles.c.role)))
                    users = list(
                        await conn.execute(sa.select(tables.users.c.email, tables.users.c.tenant_id))
                    )
            assert [r.role for r in roles] == ["RBAC_ROLE_OBSERVER"]
            assert users[0].email == "viewer@acme.example" and users[0].tenant_id != DEFAULT_ORG_ID
            return [tuple(r) for r in rows]
        finally:
            await store.close()

    assert asyncio.run(entries()) == [
        ("organization.create", "operator"),
        ("user.create", "operator"),
        ("identity.map", "operator"),
    ]
    assert admin_main(["audit", "verify", "--db", db]) == 0
    assert "acme: 3 entries, chain intact" in capsys.readouterr().out
