"""The real mender-client 3.4 daemon against our server (plain HTTP, single-file module).

Needs root: mender-client reads its identity script and artifact_info from fixed paths
(/usr/share/mender/identity/mender-device-identity, /etc/mender/artifact_info); the fixture
installs a test identity script that prints ``mac=$MESHOTA_TEST_DEVICE_MAC``.
Runs with the default (generated RSA) device key and with a static ECDSA P-256 key, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bridge.api import abort_deployment
from bridge.http import BackgroundServer, ServerConfig
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from tests.support.mender import (
    Db,
    admin_token,
    install_mender_host,
    make_artifact,
    require_binary,
    write_keys,
)

DOWNLOAD = "/api/devices/v1/deployments/download/artifacts/"


@pytest.fixture(scope="module")
def mender_host() -> None:
    install_mender_host()


class AbortOnDownload:
    """ASGI middleware: aborts a chosen deployment when its artifact download starts."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.deployment_id: str | None = None
        self.server: BackgroundServer | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(DOWNLOAD) and self.deployment_id:
            assert self.server is not None
            with tenant_scope(DEFAULT_ORG_ID):  # the test's own write, in the default organisation
                async with self.server.context.store.transaction() as conn:
                    await abort_deployment(conn, self.deployment_id)
            self.deployment_id = None
        await self.app(scope, receive, send)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["rsa-default", "ecdsa-static"])
def client_setup(
    request: pytest.FixtureRequest, db: Db, tmp_path: Path, mender_host: None
) -> Iterator[dict[str, Any]]:
    holder: dict[str, AbortOnDownload] = {}

    def wrap(app: Any) -> Any:
        holder["mw"] = AbortOnDownload(app)
        return holder["mw"]

    config = ServerConfig(db.url, tmp_path / "artifacts", port=0, db_schema=db.schema)
    server = BackgroundServer(config, middleware=wrap).start()
    holder["mw"].server = server
    keys = write_keys(tmp_path / "vendor")
    data = tmp_path / "data"
    data.mkdir()
    (data / "device_type").write_text("device_type=test-device\n")
    conf: dict[str, Any] = {
        "ServerURL": server.url,
        "UpdatePollIntervalSeconds": 2,
        "InventoryPollIntervalSeconds": 2,
        "RetryPollIntervalSeconds": 1,
        "DeviceTypeFile": str(data / "device_type"),
        "ArtifactVerifyKey": str(keys["ecdsa-public"]),
        "DBus": {"Enabled": False},
    }
    if request.param == "ecdsa-static":
        key = ec.generate_private_key(ec.SECP256R1())
        key_path = tmp_path / "device-ecdsa.pem"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        conf["Security"] = {"AuthPrivateKey": str(key_path)}
    (tmp_path / "mender.conf").write_text(json.dumps(conf))
    (tmp_path / "fallback.conf").write_text("{}")
    mac = "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])
    log = (tmp_path / "mender.log").open("wb")
    proc = subprocess.Popen(
        [
            require_binary("mender"), "--no-syslog", "-l", "info",
            "-c", str(tmp_path / "mender.conf"), "-b", str(tmp_path / "fallback.conf"),
            "-d", str(data), "daemon",
        ],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MESHOTA_TEST_DEVICE_MAC": mac},
    )  # fmt: skip
    try:
        yield {
            "server": server,
            "proc": proc,
            "keys": keys,
            "mac": mac,
            "abort": holder["mw"],
            "token": admin_token(server),
            "dest": tmp_path / "dest",
            "tmp": tmp_path,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.stop()


def test_mender_client_full_cycle(client_setup: dict[str, Any]) -> None:
    s = client_setup
    server: BackgroundServer = s["server"]
    proc: subprocess.Popen[bytes] = s["proc"]
    tmp: Path = s["tmp"]
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {s['token']}"}, timeout=30)

    # 1. pending until accepted through the management API
    dev = wait_for(
        "pending device",
        lambda: next(iter(api.get("/api/management/v2/devauth/devices").json()), None),
    )
    assert dev["status"] == "pending" and dev["identity_data"] == {"mac": s["mac"]}
    aid = dev["auth_sets"][0]["id"]
    r = api.put(
        f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
        json={"status": "accepted"},
    )
    assert r.status_code == 204

    # 2. inventory arrives
    def inventory() -> dict[str, Any]:
        attrs = api.get(f"/api/management/v1/inventory/devices/{dev['id']}").json()["attributes"]
        return {a["name"]: a["value"] for a in attrs if a["scope"] == "inventory"}

    inv = wait_for("inventory", lambda: inventory().get("artifact_name") and inventory())
    assert inv["artifact_name"] == "initial-artifact"
    assert inv["device_type"] == "test-device"
    assert inv["mender_client_version"].startswith("3.4.0")

    def deploy(artifact: Path, name: str, **extra: Any) -> str:
        files = {"artifact": (artifact.name, artifact.read_bytes(), "application/octet-stream")}
        assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        r = api.post(
            "/api/management/v1/deployments/deployments",
            json={"name": name, "artifact_name": name, "devices": [dev["id"]], **extra},
        )
        assert r.status_code == 201, r.text
        return str(r.headers["location"].rsplit("/", 1)[1])

    def finished(dep_id: str, before: Callable[[], None] | None = None) -> dict[str, int]:
        def check() -> dict[str, int] | None:
            proc.send_signal(signal.SIGUSR1)  # check for an update now
            d = api.get(f"/api/management/v1/deployments/deployments/{dep_id}").json()
            if d["status"] != "finished":
                return None
            stats: dict[str, int] = api.get(
                f"/api/management/v1/deployments/deployments/{dep_id}/statistics"
            ).json()
            return stats

        return dict(wait_for(f"deployment {dep_id}", check, timeout=90))

    # 3. a signed (ECDSA) artifact made by mender-artifact: downloaded, installed, success; a
    #    phased deployment whose next carries meshota's extra field (install policy, check-in
    #    interval), which mender-client 3.4 ignores (docs/rollouts.md)
    policy = {"install": {"consent": "automatic"}, "checkin_interval": 60}
    assert api.put("/api/meshota/v1/management/policies/tenant", json=policy).status_code == 204
    signed = make_artifact(tmp / "a", "test-artifact-1", key=s["keys"]["ecdsa-private"],
                           dest_dir=s["dest"], content=b"installed by meshota\n")  # fmt: skip
    dep1 = deploy(signed, "test-artifact-1", phases=[{"batch_size": 100}], retries=1)
    assert finished(dep1)["success"] == 1
    shown = api.get(f"/api/management/v1/deployments/deployments/{dep1}").json()
    assert shown["phases"][0]["success"] == 1 and shown["retries"] == 1
    assert (s["dest"] / "hello.txt").read_bytes() == b"installed by meshota\n"
    wait_for("new artifact_name in inventory",
             lambda: inventory().get("artifact_name") == "test-artifact-1")  # fmt: skip

    # 4. aborted while downloading: the client's next status gets 409 and it reports failure
    aborted = make_artifact(tmp / "b", "abort-me", key=s["keys"]["ecdsa-private"],
                            dest_dir=tmp / "never")  # fmt: skip
    dep2 = deploy(aborted, "abort-me")
    s["abort"].deployment_id = dep2
    stats = finished(dep2)
    assert stats["aborted"] == 1
    wait_for("log of aborted deployment",
             lambda: api.get(f"/api/management/v1/deployments/deployments/{dep2}/devices"
                             ).json()[0]["log"])  # fmt: skip
    assert not (tmp / "never").exists()

    # 5. unsigned artifact with ArtifactVerifyKey set: failure, and the uploaded log is stored
    unsigned = make_artifact(tmp / "c", "unsigned-1", dest_dir=tmp / "never")
    dep3 = deploy(unsigned, "unsigned-1")
    assert finished(dep3)["failure"] == 1
    log = wait_for(
        "failure log",
        lambda: (
            (
                r := api.get(f"/api/management/v1/deployments/deployments/{dep3}/devices/{dev['id']}/log")
            ).status_code
            == 200
            and r.text
        ),
    )
    assert "signature" in log.lower()
    assert not (tmp / "never").exists()
