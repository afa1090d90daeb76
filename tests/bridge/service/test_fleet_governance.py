"""Issue 16's features under issue 15's governance (in process; SQLite and PostgreSQL): phased
rollouts, fleet/group policies and device configuration across two organisations — one never
sees or changes the other's — their device routes in the device's organisation, and the rollout
ticker moving each organisation's rollouts in that organisation, audited as a system principal.
(Per role and per route the generated matrix, tests/bridge/service/test_matrix.py, covers them.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bridge.api import rollout_tick, store_artifact
from bridge.api._device_deployments import CHECKIN_HEADER
from bridge.service import create_org, operator, verify_chain
from bridge.store import DEFAULT_ORG_ID, cross_tenant, gov_tables, tenant_scope
from bridge.store import rollout_tables as rt
from bridge.store._tenancy import reset_tenant, set_tenant
from tests.bridge.service.test_governance import Api, _accept_all, _user, api_on
from tests.support.mender import Db, auth_body, device_key, make_artifact

ROLL = "/api/meshota/v1/management/rollouts"
POL = "/api/meshota/v1/management/policies"
DCFG = "/api/management/v1/deviceconfig/configurations/device"
DEVCFG = "/api/devices/v1/deviceconfig/configuration"
NEXT = "/api/devices/v1/deployments/device/deployments/next"
QUERY = {"artifact_name": ["a"], "device_type": ["test-device"]}


async def _org(api: Api, tmp: Path, org: str, tenant_token: str, name: str) -> dict[str, Any]:
    """An organisation with an admin, one accepted device (its token), an artifact, a phased
    deployment to the device, a fleet and a group policy, a device configuration."""
    admin = await _user(api, org, f"admin-{name}@example.com", ["RBAC_ROLE_PERMIT_ALL"])
    key = device_key("ecdsa")
    body, sig = auth_body(key, f"mac-{name}", tenant_token)
    headers = {"x-men-signature": sig}
    assert (
        await api.call("POST", "/api/devices/v1/authentication/auth_requests", body=body, headers=headers)
    ).status == 401
    [dev] = await _accept_all(api, admin)
    r = await api.call("POST", "/api/devices/v1/authentication/auth_requests", body=body, headers=headers)
    assert r.status == 200
    art = make_artifact(tmp, f"fw-{name}")
    await store_artifact(api.ctx, art.read_bytes(), name, by=operator(org))
    group = f"grp-{name}"
    assert (
        await api.call("PUT", f"/api/management/v1/inventory/devices/{dev}/group", admin, {"group": group})
    ).status == 204
    dep = await api.call(
        "POST",
        "/api/management/v1/deployments/deployments",
        admin,
        {"name": name, "artifact_name": f"fw-{name}", "devices": [dev], "phases": [{"batch_size": 100}],
         "gates": {"success_share": 1.0}},
    )  # fmt: skip
    assert dep.status == 201, dep.body
    dep_id = dict(dep.headers)["Location"].rsplit("/", 1)[1]
    interval = {"a": 600, "b": 1200}[name]
    assert (
        await api.call("PUT", f"{POL}/tenant", admin, {"install": None, "checkin_interval": interval})
    ).status == 204
    group_policy = {"install": None, "checkin_interval": interval + 1}
    assert (await api.call("PUT", f"{POL}/groups/{group}", admin, group_policy)).status == 204
    assert (await api.call("PUT", f"{DCFG}/{dev}", admin, {"secret": f"value-{name}"})).status == 204
    return {"admin": admin, "dev": dev, "token": r.body.decode(), "dep": dep_id, "group": group,
            "interval": interval}  # fmt: skip


async def _b_state(api: Api, b_id: str) -> tuple[Any, ...]:
    with tenant_scope(b_id):
        async with api.store.read() as conn:
            out = []
            for table in (rt.rollouts, rt.fleet_policies, rt.device_configs, rt.rollout_devices):
                out.append(tuple(str(r) for r in await conn.execute(sa.select(table))))
            return tuple(out)


def test_one_organisation_never_sees_nor_changes_anothers(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        async with api_on(db, tmp_path) as api:
            async with api.store.transaction() as conn:
                org_b = await create_org(conn, "org-b")
            assert org_b.tenant_token
            a = await _org(api, tmp_path, DEFAULT_ORG_ID, "", "a")
            b = await _org(api, tmp_path, org_b.id, org_b.tenant_token, "b")
            before = await _b_state(api, org_b.id)
            assert all(before)  # B has a row in each table: there is something to protect
            admin = a["admin"]

            # rollouts: B's deployment id is not found, and no action reaches it
            assert (await api.call("GET", f"{ROLL}/{a['dep']}", admin)).status == 200
            assert (await api.call("GET", f"{ROLL}/{b['dep']}", admin)).status == 404
            for action in ("pause", "abort", "approve", "resume"):
                assert (await api.call("POST", f"{ROLL}/{b['dep']}/{action}", admin)).status == 404
            assert (
                await api.call("GET", f"/api/management/v1/deployments/deployments/{b['dep']}", admin)
            ).status == 404

            # policies: names resolve in the caller's organisation only
            got = await api.call("GET", f"{POL}/groups/{b['group']}", admin)
            assert got.status == 200 and json.loads(got.body) == {"install": None, "checkin_interval": None}
            assert json.loads((await api.call("GET", f"{POL}/tenant", admin)).body)["checkin_interval"] == 600
            # A has no policy of that name: nothing to delete (B's stays, checked below)
            assert (await api.call("DELETE", f"{POL}/groups/{b['group']}", admin)).status == 204
            put = await api.call(
                "PUT", f"{POL}/groups/{b['group']}", admin, {"install": None, "checkin_interval": 30}
            )
            assert put.status == 204  # A's own policy for a group of that name
            assert (
                await api.call("PUT", f"{POL}/tenant", admin, {"install": None, "checkin_interval": 45})
            ).status == 204

            # device configuration: B's device is not found
            assert (await api.call("GET", f"{DCFG}/{b['dev']}", admin)).status == 404
            assert (await api.call("PUT", f"{DCFG}/{b['dev']}", admin, {"x": "y"})).status == 404
            assert (await api.call("POST", f"{DCFG}/{b['dev']}/deploy", admin, {})).status == 404
            mine = json.loads((await api.call("GET", f"{DCFG}/{a['dev']}", admin)).body)
            assert mine["configured"] == {"secret": "value-a"}

            assert await _b_state(api, org_b.id) == before  # nothing of B changed

            # device routes run in the device's organisation: B's device gets B's configuration,
            # its report lands in B, its check-in interval is B's group policy (A's writes above
            # to a group and a fleet policy never reach it)
            got = await api.call("GET", DEVCFG, b["token"])
            assert json.loads(got.body) == {"secret": "value-b"}
            assert (await api.call("PUT", DEVCFG, b["token"], {"applied": "yes"})).status == 204
            nxt = await api.call("GET", NEXT, b["token"], query=QUERY)
            assert nxt.status == 200 and dict(nxt.headers)[CHECKIN_HEADER] == "1201"
            assert json.loads(nxt.body)["id"] == b["dep"]
            nxt = await api.call("GET", NEXT, a["token"], query=QUERY)
            assert dict(nxt.headers)[CHECKIN_HEADER] == "601" and json.loads(nxt.body)["id"] == a["dep"]
            with tenant_scope(org_b.id):
                async with api.store.read() as conn:
                    reported = (await conn.execute(sa.select(rt.device_configs.c.reported))).scalar_one()
            assert reported == {"applied": "yes"}

            # every write above is in its own organisation's audit log, never the other's
            with cross_tenant():
                async with api.store.read() as conn:
                    rows = list(await conn.execute(sa.select(gov_tables.audit_log)))
            b_actions = {r.action for r in rows if r.tenant_id == org_b.id}
            assert {"deployment.create", "policy.set", "device.configure"} <= b_actions
            a_rows = [r for r in rows if r.tenant_id == DEFAULT_ORG_ID]
            policy_sets = [(r.object_type, r.object_id) for r in a_rows if r.action == "policy.set"]
            assert policy_sets == [("tenant", ""), ("group", "grp-a"), ("group", b["group"]), ("tenant", "")]
            assert not [r for r in a_rows if r.action == "policy.delete"]  # nothing was deleted
            secrets = [r for r in rows if "value-" in json.dumps(r.change)]
            assert not secrets  # configuration values are never in the audit log

    asyncio.run(run())


def test_the_ticker_moves_each_rollout_in_its_organisation(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        async with api_on(db, tmp_path) as api:
            async with api.store.transaction() as conn:
                org_b = await create_org(conn, "org-b")
            assert org_b.tenant_token
            a = await _org(api, tmp_path, DEFAULT_ORG_ID, "", "a")
            b = await _org(api, tmp_path, org_b.id, org_b.tenant_token, "b")
            # both devices install; A's reports failure (its error gate pauses), B's success (done)
            for org, status in ((a, "failure"), (b, "success")):
                path = f"/api/devices/v1/deployments/device/deployments/{org['dep']}/status"
                assert (await api.call("PUT", path, org["token"], {"status": status})).status == 204
            # as in the server's ticker task: no organisation in scope (the test session has one)
            token = set_tenant(None)
            try:
                events = dict(await rollout_tick(api.ctx.gov, 2e9))
            finally:
                reset_tenant(token)
            assert events == {a["dep"]: "paused", b["dep"]: "done"}
            for org, tenant, action in ((a, DEFAULT_ORG_ID, "rollout.pause"), (b, org_b.id, "rollout.done")):
                with tenant_scope(tenant):
                    async with api.store.read() as conn:
                        log = gov_tables.audit_log
                        query = sa.select(log).where(
                            log.c.object_id == org["dep"], log.c.action.like("rollout.%")
                        )
                        [entry] = list(await conn.execute(query))
                        assert entry.action == action and entry.tenant_id == tenant
                        assert (entry.actor_type, entry.actor_name) == ("system", "rollout-ticker")
                        assert (await verify_chain(conn))[1] is None
            got = await api.call("GET", f"{ROLL}/{a['dep']}", a["admin"])
            assert json.loads(got.body)["state"] == "paused"
            # resuming is a person's action, audited as theirs, in their organisation
            r = await api.call("POST", f"{ROLL}/{a['dep']}/resume", a["admin"])
            assert r.status == 200 and json.loads(r.body) == {"state": "running"}
            with tenant_scope(DEFAULT_ORG_ID):
                async with api.store.read() as conn:
                    last = list(
                        await conn.execute(
                            sa.select(gov_tables.audit_log).order_by(gov_tables.audit_log.c.seq)
                        )
                    )[-1]
            assert (last.action, last.actor_type, last.object_id) == ("rollout.resume", "user", a["dep"])

    asyncio.run(run())
