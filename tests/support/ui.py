"""Helpers for the admin UI's tests (tests/bridge/ui) and benchmarks/ui_pages.py.

A server on SQLite with users in two organisations, devices that authenticate, report inventory
and take deployments through the real device API (httpx), and a logged-in UI client.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge.api import Settings, create_user
from bridge.api._limits import ApiLimits
from bridge.http import BackgroundServer, ServerConfig
from bridge.service import create_org
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from tests.support.mender import auth_body, device_key

ADMIN = ("ui-admin@example.com", "secret-admin-1")
OBSERVER = ("ui-observer@example.com", "secret-observer-1")
ADMIN_B = ("ui-admin-b@example.com", "secret-admin-b1")
DEV = "/api/devices/v1"
NEXT = f"{DEV}/deployments/device/deployments/next"
DEVAUTH = "/api/management/v2/devauth/devices"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class UiFleet:
    server: BackgroundServer
    url: str
    tenant_b_token: str
    tokens: dict[str, str] = field(default_factory=dict)  # user -> management JWT

    def api(self, user: tuple[str, str] = ADMIN) -> httpx.Client:
        token = self.tokens.get(user[0])
        if token is None:
            r = httpx.post(f"{self.url}/api/management/v1/useradm/auth/login", auth=user, timeout=30)
            r.raise_for_status()
            token = self.tokens[user[0]] = r.text
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def start_ui_server(tmp_path: Path, db_url: str | None = None) -> UiFleet:
    """A server (SQLite unless ``db_url``) with an admin and a read-only user in the default
    organisation and an admin of a second organisation ``org-b``."""
    config = ServerConfig(
        db_url=db_url or f"sqlite:///{tmp_path / 'ui.sqlite'}",
        artifacts_dir=tmp_path / "artifacts",
        port=0,
        # every test of a module logs in from 127.0.0.1: the per-source login budget (30, refilled
        # 1 per 2 s; tested in tests/bridge/api) would refuse the later ones
        settings=Settings(limits=ApiLimits(login_source_burst=1000)),
    )
    server = BackgroundServer(config).start()

    async def setup() -> str:
        with tenant_scope(DEFAULT_ORG_ID):
            async with server.context.store.transaction() as conn:
                await create_user(conn, *ADMIN)
                await create_user(conn, *OBSERVER, roles=["RBAC_ROLE_OBSERVER"])
                org_b = await create_org(conn, "org-b")
        with tenant_scope(org_b.id):
            async with server.context.store.transaction() as conn:
                await create_user(conn, *ADMIN_B)
        assert org_b.tenant_token is not None
        return org_b.tenant_token

    token_b = server.run_coroutine(setup())
    return UiFleet(server, server.url, token_b)


@dataclass
class Device:
    id: str
    token: str
    mac: str


def auth_request(url: str, key: Any, mac: str, tenant: str) -> httpx.Response:
    body, sig = auth_body(key, mac, tenant)
    return httpx.post(
        f"{url}{DEV}/authentication/auth_requests",
        content=body,
        headers={"X-MEN-Signature": sig, "Content-Type": "application/json"},
        timeout=30,
    )


def add_devices(
    fleet: UiFleet,
    count: int,
    *,
    group: str | None = None,
    admin: tuple[str, str] = ADMIN,
    tenant: str = "",
    artifact_name: str = "release-1",
    prefix: str = "",
) -> list[Device]:
    """``count`` devices: authenticated (pending), accepted by ``admin``, logged in, inventory
    reported (device_type test-device, ``artifact_name``), put in ``group``."""
    keys = {}
    for _ in range(count):
        mac = f"{prefix}{uuid.uuid4().hex[:12]}"
        key = device_key("ecdsa")
        keys[mac] = key
        assert auth_request(fleet.url, key, mac, tenant).status_code == 401  # pending
    out = []
    with fleet.api(admin) as api:
        pending = []
        page = 1
        while True:
            got = api.get(DEVAUTH, params={"status": "pending", "per_page": 500, "page": page}).json()
            pending += got
            if len(got) < 500:
                break
            page += 1
        by_mac = {d["identity_data"].get("mac"): d for d in pending}
        for mac, key in keys.items():
            d = by_mac[mac]
            aid = d["auth_sets"][0]["id"]
            r = api.put(f"{DEVAUTH}/{d['id']}/auth/{aid}/status", json={"status": "accepted"})
            assert r.status_code == 204, r.text
            login = auth_request(fleet.url, key, mac, tenant)
            assert login.status_code == 200, login.text
            dev = Device(d["id"], login.text, mac)
            report_inventory(fleet.url, dev, {"device_type": "test-device", "artifact_name": artifact_name})
            if group is not None:
                r = api.put(f"/api/management/v1/inventory/devices/{d['id']}/group", json={"group": group})
                assert r.status_code == 204, r.text
            out.append(dev)
    return out


def report_inventory(url: str, dev: Device, attrs: dict[str, Any]) -> None:
    body = [{"name": k, "value": v} for k, v in attrs.items()]
    r = httpx.patch(
        f"{url}{DEV}/inventory/device/attributes",
        json=body,
        headers={"Authorization": f"Bearer {dev.token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def check_in(url: str, dev: Device, artifact_name: str = "release-1") -> str | None:
    """The device asks for a deployment: its id, or None."""
    r = httpx.get(
        f"{url}{NEXT}",
        params={"device_type": "test-device", "artifact_name": artifact_name},
        headers={"Authorization": f"Bearer {dev.token}"},
        timeout=30,
    )
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def report(url: str, dev: Device, deployment_id: str, status: str) -> None:
    r = httpx.put(
        f"{url}{DEV}/deployments/device/deployments/{deployment_id}/status",
        json={"status": status},
        headers={"Authorization": f"Bearer {dev.token}"},
        timeout=30,
    )
    assert r.status_code == 204, r.text


def tick(fleet: UiFleet) -> list[tuple[str, str]]:
    """One pass of the rollout ticker (the server process runs it every 30 s; tests step it)."""
    from bridge.api import rollout_tick

    ctx = fleet.server.context
    result: list[tuple[str, str]] = fleet.server.run_coroutine(rollout_tick(ctx.gov, ctx.clock()))
    return result


@contextlib.contextmanager
def ui_login(url: str, user: tuple[str, str]) -> Iterator[httpx.Client]:
    """An httpx client logged in to the UI (the cookie set by /ui/login)."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as client:
        r = client.post("/ui/login", data={"email": user[0], "password": user[1], "next": "/ui/"})
        assert r.status_code == 303, r.text
        yield client


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


def post_mesh_report(url: str, dev: Device | None, body: bytes) -> httpx.Response:
    """A root's stream progress report (wire/SPEC.md §7) through the device API."""
    headers = {"Content-Type": "application/vnd.meshota-mesh-report"}
    if dev is not None:
        headers["Authorization"] = f"Bearer {dev.token}"
    return httpx.post(f"{url}/api/meshota/v1/devices/mesh/report", content=body, headers=headers, timeout=30)


def stream_of(url: str, dev: Device, artifact_id: str, chunk_size: int = 1024) -> bytes:
    """The stream id of the chunk map the server signs for this artifact, fetched as ``dev``."""
    from wire.chunk_map import ChunkMap

    r = httpx.get(
        f"{url}/api/meshota/v1/devices/chunk_maps/{artifact_id}",
        params={"chunk_size": chunk_size},
        headers={"Authorization": f"Bearer {dev.token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return ChunkMap.decode(r.content).head.stream_id()
