"""Organisations end to end with the real Mender tools (issue 15), on SQLite.

- the real mender-client 3.4 with ``TenantToken`` in mender.conf enrols into that organisation:
  its operators see it and accept it, the default organisation never sees it;
- the real mender-cli 1.9 with a personal access token (``--token-value``) uploads and lists
  artifacts in its organisation; once the token is deleted it is refused;
- the audit log has those changes; ``meshota admin audit verify`` passes, and names the entry
  after one row is edited in the database.

mender-client needs root (fixed identity and artifact_info paths; see test_mender_client.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bridge.api import create_user
from bridge.http import BackgroundServer, ServerConfig
from bridge.service import create_org
from bridge.store import cross_tenant, gov_tables, tenant_scope
from tests.support.mender import make_artifact, require_binary


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


ACME = ("ops@acme.example", "acme-password")
HOME = ("ops@default.example", "default-password")


def _login(url: str, who: tuple[str, str]) -> str:
    r = httpx.post(f"{url}/api/management/v1/useradm/auth/login", auth=who, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


@pytest.fixture
def two_orgs(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    server = BackgroundServer(ServerConfig(db_url, tmp_path / "artifacts", port=0)).start()

    async def setup() -> tuple[str, str]:
        store = server.context.store
        async with store.transaction() as conn:
            org = await create_org(conn, "acme")
        with tenant_scope(org.id):
            async with store.transaction() as conn:
                await create_user(conn, *ACME)
        with tenant_scope("default"):
            async with store.transaction() as conn:
                await create_user(conn, *HOME)
        assert org.tenant_token is not None
        return org.id, org.tenant_token

    try:
        org_id, tenant_token = server.run_coroutine(setup())
        yield {
            "server": server,
            "db": db_url,
            "org": org_id,
            "tenant_token": tenant_token,
            "acme": _login(server.url, ACME),
            "home": _login(server.url, HOME),
        }
    finally:
        server.stop()


def test_mender_client_with_a_tenant_token_lands_in_its_organisation(
    two_orgs: dict[str, Any],
    tmp_path: Path,
    mender_host: None,
) -> None:
    url = two_orgs["server"].url
    data = tmp_path / "data"
    data.mkdir()
    (data / "device_type").write_text("device_type=test-device\n")
    conf = {
        "ServerURL": url,
        "TenantToken": two_orgs["tenant_token"],
        "UpdatePollIntervalSeconds": 2,
        "InventoryPollIntervalSeconds": 2,
        "RetryPollIntervalSeconds": 1,
        "DeviceTypeFile": str(data / "device_type"),
        "DBus": {"Enabled": False},
    }
    (tmp_path / "mender.conf").write_text(json.dumps(conf))
    (tmp_path / "fallback.conf").write_text("{}")
    mac = "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])
    log = (tmp_path / "mender.log").open("wb")
    proc = subprocess.Popen(
        [require_binary("mender"), "--no-syslog", "-l", "info", "-c", str(tmp_path / "mender.conf"),
         "-b", str(tmp_path / "fallback.conf"), "-d", str(data), "daemon"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MESHOTA_TEST_DEVICE_MAC": mac},
    )  # fmt: skip
    acme = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {two_orgs['acme']}"}, timeout=30)
    home = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {two_orgs['home']}"}, timeout=30)
    try:
        dev = wait_for(
            "pending device in acme",
            lambda: next(iter(acme.get("/api/management/v2/devauth/devices").json()), None),
        )
        assert dev["identity_data"] == {"mac": mac} and dev["status"] == "pending"
        assert home.get("/api/management/v2/devauth/devices").json() == []
        assert home.get(f"/api/management/v2/devauth/devices/{dev['id']}").status_code == 404
        # the default organisation's operator cannot accept it; acme's can
        aid = dev["auth_sets"][0]["id"]
        path = f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status"
        assert home.put(path, json={"status": "accepted"}).status_code == 404
        assert acme.put(path, json={"status": "accepted"}).status_code == 204

        def inventory() -> dict[str, Any] | None:
            attrs = acme.get(f"/api/management/v1/inventory/devices/{dev['id']}").json()["attributes"]
            found = {a["name"]: a["value"] for a in attrs if a["scope"] == "inventory"}
            return found if found.get("mender_client_version") else None

        assert wait_for("the accepted device's inventory in acme", inventory)["device_type"] == "test-device"
        assert home.get("/api/management/v1/inventory/devices").json() == []
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _cli(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    return subprocess.run([require_binary("mender-cli"), "--server", url, *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=home)  # fmt: skip


def _admin(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str]:
    from meshota.cli.server import admin_main

    code = admin_main([*args, "--db", db])
    return code, capsys.readouterr().out


def test_mender_cli_with_a_personal_access_token_and_the_audit_chain(
    two_orgs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = two_orgs["server"].url
    acme = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {two_orgs['acme']}"}, timeout=30)
    r = acme.post("/api/management/v1/useradm/settings/tokens", json={"name": "ci", "expires_in": 3600})
    assert r.status_code == 200, r.text
    pat = r.text
    [listed] = acme.get("/api/management/v1/useradm/settings/tokens").json()
    home = tmp_path / "home"
    home.mkdir()
    art = make_artifact(tmp_path, "pat-artifact")
    up = _cli(url, home, "--token-value", pat, "artifacts", "upload", "--no-progress", str(art))
    assert up.returncode == 0, up.stderr
    shown = _cli(url, home, "--token-value", pat, "artifacts", "list")
    assert shown.returncode == 0 and "pat-artifact" in shown.stdout, shown.stderr
    theirs = httpx.get(
        f"{url}/api/management/v1/deployments/artifacts",
        headers={"Authorization": f"Bearer {two_orgs['home']}"},
    )
    assert theirs.json() == []  # uploaded into acme only
    assert acme.delete(f"/api/management/v1/useradm/settings/tokens/{listed['id']}").status_code == 204
    refused = _cli(url, home, "--token-value", pat, "artifacts", "list")
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr

    # the audit log of acme: who did what, as JSON and CSV
    logs = acme.get("/api/management/v1/auditlogs/logs", params={"sort": "asc"}).json()
    actions = [e["action"] for e in logs]
    assert {"token.create", "artifact.upload", "token.delete"} <= set(actions)
    upload = next(e for e in logs if e["action"] == "artifact.upload")
    assert upload["actor"]["type"] == "token" and upload["actor"]["email"] == ACME[0]
    csv_text = acme.get("/api/management/v1/auditlogs/logs/export").text
    assert csv_text.splitlines()[0].startswith("seq,time,actor_type") and "artifact.upload" in csv_text

    two_orgs["server"].stop()  # the CLI opens the file itself
    code, out = _admin(capsys, two_orgs["db"], "audit", "verify")
    assert code == 0 and "acme: 3 entries, chain intact" in out, out

    async def edit() -> None:
        from bridge.store import Store

        store = Store.open(two_orgs["db"])
        try:
            with cross_tenant():
                async with store.transaction() as conn:
                    a = gov_tables.audit_log
                    await conn.execute(sa.update(a).where(a.c.id == upload["id"]).values(object_id="forged"))
        finally:
            await store.close()

    import asyncio

    asyncio.run(edit())
    code, out = _admin(capsys, two_orgs["db"], "audit", "verify")
    assert code == 1
    assert (
        f"acme: BROKEN at entry seq={upload['meshota_seq']} id={upload['id']}: hash does not match" in out
    ), out
