"""Migration 0007 (governance) on a real wave-1 database: one built by migrations 0001-0004
and filled with the rows wave-1 code wrote, then upgraded. Every row lands in the default
organisation, wave-1 users keep every permission, and the server works on the result (login
with the wave-1 password hash, the device and its deployment visible). Runs on SQLite (a file)
and PostgreSQL (own schema; ``MESHOTA_TEST_PG_URL`` points elsewhere)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bridge.api import ApiContext, Request, Settings, build_router
from bridge.artifacts import BlobStore
from bridge.store import DEFAULT_ORG_ID, Store, cross_tenant, gov_tables, tables
from bridge.store._engine import _MIGRATIONS
from tests.support.mender import Db

TENANT_TABLES = (
    "users",
    "devices",
    "auth_sets",
    "inventory",
    "artifacts",
    "deployments",
    "device_deployments",
)


def _upgrade_to(conn: sa.Connection, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _wave1_password_hash(password: str) -> str:
    salt = b"wave-one-salt-16"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


WAVE1_ROWS = [
    "INSERT INTO settings (key, value) VALUES ('secret', '" + "ab" * 32 + "')",
    "INSERT INTO users (id, email, password_hash, created_ts, updated_ts) VALUES "
    "('u1', 'ops@example.com', :pw, 1.0, 1.0)",
    "INSERT INTO devices (id, id_data_sha256, id_data, status, created_ts, updated_ts, transport_id) VALUES "
    "('d1', :digest, :id_data, 'accepted', 2.0, 2.0, 'node-1')",
    "INSERT INTO auth_sets (id, device_id, pubkey, status, ts, transport_id) VALUES "
    "('a1', 'd1', 'PEM', 'accepted', 2.0, 'node-1')",
    "INSERT INTO inventory (device_id, scope, name, value, description, updated_ts) VALUES "
    "('d1', 'system', 'group', '\"lab\"', NULL, 3.0)",
    "INSERT INTO artifacts (id, name, description, device_types, signed, size, sha256, info, provides, "
    "depends, clears_provides, updates, modified_ts) VALUES ('art1', 'fw-1', '', '[\"t\"]', false, 10, :sha, "
    "'{}', '{}', '{}', '[]', '[]', 4.0)",
    "INSERT INTO deployments (id, name, artifact_name, status, force_installation, group_name, device_count, "
    "created_ts, finished_ts) VALUES ('dep1', 'roll', 'fw-1', 'inprogress', false, 'lab', 1, 5.0, NULL)",
    "INSERT INTO device_deployments (id, deployment_id, device_id, status, substate, artifact_id, log, "
    "created_ts, started_ts, finished_ts) VALUES ('dd1', 'dep1', 'd1', 'downloading', NULL, 'art1', NULL, "
    "5.0, 6.0, NULL)",
    'INSERT INTO fleet_weekly ("window", version, device_type, age_bucket, source, count) VALUES '
    "(2900, 'fw-1', 't', 0, 'checkin', 1)",
]


def test_wave1_database_upgrades_into_the_default_organisation(db: Db, tmp_path: Path) -> None:
    id_data = json.dumps({"mac": "00:11"}, separators=(",", ":"))
    params = {
        "pw": _wave1_password_hash("wave-one-password"),
        "digest": hashlib.sha256(id_data.encode()).hexdigest(),
        "id_data": id_data,
        "sha": "0" * 64,
    }

    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            if db.schema is not None:
                async with store.engine.begin() as conn:
                    await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
            with cross_tenant():
                async with store.transaction() as conn:  # the wave-1 database, as wave 1 left it
                    await conn.run_sync(_upgrade_to, "0004")
                    for statement in WAVE1_ROWS:
                        names = [k for k in params if f":{k}" in statement]
                        await conn.execute(sa.text(statement), {k: params[k] for k in names})
            await store.migrate()  # 0005 (fleet_mesh_seen), 0006 (rollouts), 0007 (governance), 0008
            with cross_tenant():
                async with store.read() as conn:
                    for name in TENANT_TABLES:
                        table = tables.metadata.tables[name]
                        owners = set((await conn.execute(sa.select(table.c.tenant_id))).scalars())
                        assert owners == {DEFAULT_ORG_ID}, name
                    orgs = [tuple(r) for r in await conn.execute(sa.select(gov_tables.organizations.c.id))]
                    assert orgs == [(DEFAULT_ORG_ID,)]
                    roles = [tuple(r) for r in await conn.execute(sa.select(gov_tables.user_roles))]
                    assert roles == [("u1", "RBAC_ROLE_PERMIT_ALL", DEFAULT_ORG_ID)]
                    weekly = (
                        await conn.execute(sa.select(sa.func.count()).select_from(sa.table("fleet_weekly")))
                    ).scalar()
                    assert weekly == 1

            # the server on the upgraded database: the wave-1 user logs in with the wave-1 hash
            ctx = await ApiContext.create(store, BlobStore(tmp_path / "blobs"), Settings())
            router = build_router(ctx)
            basic = base64.b64encode(b"ops@example.com:wave-one-password").decode()
            login = await router.handle(
                Request(
                    "POST",
                    "/api/management/v1/useradm/auth/login",
                    headers={"authorization": f"Basic {basic}"},
                )
            )
            assert login.status == 200, login.body
            auth = {"authorization": f"Bearer {login.body.decode()}"}
            devices = await router.handle(Request("GET", "/api/management/v2/devauth/devices", headers=auth))
            assert devices.status == 200
            assert [d["id"] for d in json.loads(devices.body)] == ["d1"]
            dep = await router.handle(
                Request("GET", "/api/management/v1/deployments/deployments/dep1", headers=auth)
            )
            assert dep.status == 200 and json.loads(dep.body)["groups"] == ["lab"]
            groups = await router.handle(Request("GET", "/api/management/v1/inventory/groups", headers=auth))
            assert json.loads(groups.body) == ["lab"]
        finally:
            await store.close()

    asyncio.run(run())
