"""Shared helpers for the API/store/artifact/HTTP/Mender tests (plain helpers, no fixtures).

Databases: the ``db`` fixture (tests/conftest.py) runs a test once on SQLite (a file in tmp_path)
and once on PostgreSQL. PostgreSQL defaults to ``postgresql://postgres@127.0.0.1:5432/test`` (trust auth);
set ``MESHOTA_TEST_PG_URL`` to use another server. Each test gets its own schema, dropped
afterwards, so concurrent runs never collide.

Mender tools: the Debian packages ``mender-client``, ``mender-artifact`` and ``mender-cli``
must be installed (``apt-get install -y mender-client mender-artifact mender-cli``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from bridge.api import Settings, create_user
from bridge.http import BackgroundServer, ServerConfig
from bridge.store import DEFAULT_ORG_ID, tenant_scope

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = ("admin@example.com", "secret123")


def pg_url() -> str:
    return os.environ.get("MESHOTA_TEST_PG_URL", DEFAULT_PG_URL)


@dataclass(frozen=True)
class Db:
    url: str
    schema: str | None
    kind: str


def pg_schema(action: str, schema: str) -> None:
    import asyncpg

    async def run() -> None:
        url = pg_url().replace("postgresql+asyncpg://", "postgresql://")
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            pytest.fail(f"PostgreSQL at {url} is not reachable ({exc}); start it or set MESHOTA_TEST_PG_URL")
        try:
            if action == "create":
                await conn.execute(f'CREATE SCHEMA "{schema}"')
            else:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(run())


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y mender-client mender-artifact mender-cli")
    return path


# mender-client reads its identity script and artifact_info from fixed paths (root needed)
IDENTITY = Path("/usr/share/mender/identity/mender-device-identity")
ARTIFACT_INFO = Path("/etc/mender/artifact_info")
IDENTITY_SCRIPT = """#!/bin/sh
# meshota test identity: one value per test run, from the environment
echo "mac=${MESHOTA_TEST_DEVICE_MAC:-02:00:00:00:00:01}"
"""


def install_mender_host() -> None:
    """The identity script and artifact_info mender-client 3.4 reads, at their fixed paths."""
    require_binary("mender")
    try:
        IDENTITY.parent.mkdir(parents=True, exist_ok=True)
        if not IDENTITY.exists() or IDENTITY.read_text() != IDENTITY_SCRIPT:
            IDENTITY.write_text(IDENTITY_SCRIPT)
            IDENTITY.chmod(0o755)
        ARTIFACT_INFO.parent.mkdir(parents=True, exist_ok=True)
        if not ARTIFACT_INFO.exists():
            ARTIFACT_INFO.write_text("artifact_name=initial-artifact\n")
    except PermissionError as exc:
        pytest.fail(f"mender-client needs files at fixed paths (run as root): {exc}")


def write_mender_conf(tmp: Path, server_url: str, *, poll: int, dbus: bool) -> Path:
    """``tmp/mender.conf`` for mender-client 3.4 (device type ``test-device`` in ``tmp/mender-data``),
    polling for updates and inventory every ``poll`` seconds."""
    data = tmp / "mender-data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "device_type").write_text("device_type=test-device\n")
    conf = {
        "ServerURL": server_url,
        "UpdatePollIntervalSeconds": poll,
        "InventoryPollIntervalSeconds": poll,
        "RetryPollIntervalSeconds": 1,
        "DeviceTypeFile": str(data / "device_type"),
        "DBus": {"Enabled": dbus},
    }
    path = tmp / "mender.conf"
    path.write_text(json.dumps(conf))
    return path


# -- keys and artifacts ---------------------------------------------------------------------
def write_keys(directory: Path) -> dict[str, Path]:
    """ECDSA P-256 (SEC1) and RSA (PKCS#1) vendor keys in the PEM forms mender-artifact 3.9 reads."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for name, key in (("ecdsa", ec_key), ("rsa", rsa_key)):
        priv = directory / f"{name}-private.pem"
        priv.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        pub = directory / f"{name}-public.pem"
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        out[f"{name}-private"], out[f"{name}-public"] = priv, pub
    return out


def make_artifact(
    workdir: Path,
    name: str,
    *,
    key: Path | None = None,
    dest_dir: Path | None = None,
    content: bytes = b"hello from meshota\n",
    compression: str = "gzip",
    device_type: str = "test-device",
) -> Path:
    """A single-file module-image artifact, made by the real mender-artifact."""
    tool = require_binary("mender-artifact")
    payload = workdir / f"payload-{name}"
    payload.mkdir(parents=True, exist_ok=True)
    (payload / "hello.txt").write_bytes(content)
    (payload / "dest_dir").write_text(f"{dest_dir or workdir / 'dest'}\n")
    (payload / "filename").write_text("hello.txt\n")
    # filler keeps the artifact above the client's 4096-byte minimum whatever the compression
    (payload / "filler.txt").write_bytes(base64.b64encode(os.urandom(6000)))
    out = workdir / f"{name}.mender"
    cmd = [
        tool, "write", "module-image", "-T", "single-file", "-t", device_type, "-n", name,
        "-o", str(out), "--compression", compression, "--software-version", "1.0.0",
    ]  # fmt: skip
    for f in ("hello.txt", "dest_dir", "filename", "filler.txt"):
        cmd += ["-f", str(payload / f)]
    if key is not None:
        cmd += ["-k", str(key)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return out


# -- device-side signing (what mender-client does) ------------------------------------------
def device_key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def auth_body(key: Any, mac: str, tenant: str = "") -> tuple[bytes, str]:
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    id_data = json.dumps({"mac": mac}, separators=(",", ":"))
    body = (json.dumps({"id_data": id_data, "tenant_token": tenant, "pubkey": pub.decode()}) + "\n").encode()
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(body, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(body)
    return body, base64.b64encode(sig).decode()


# -- a running server -----------------------------------------------------------------------
@dataclass
class RunningServer:
    server: BackgroundServer
    url: str
    token: str
    artifacts_dir: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_server(db: Db, tmp_path: Path, settings: Settings | None = None) -> BackgroundServer:
    config = ServerConfig(
        db_url=db.url,
        artifacts_dir=tmp_path / "artifacts",
        port=0,
        db_schema=db.schema,
        settings=settings or Settings(),
    )
    return BackgroundServer(config).start()


def admin_token(server: BackgroundServer) -> str:
    async def add() -> None:
        with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
            async with server.context.store.transaction() as conn:
                await create_user(conn, *ADMIN)

    server.run_coroutine(add())
    r = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def device_login(url: str, key: Any, mac: str) -> httpx.Response:
    body, sig = auth_body(key, mac)
    return httpx.post(
        f"{url}/api/devices/v1/authentication/auth_requests",
        content=body,
        headers={"X-MEN-Signature": sig, "Content-Type": "application/json"},
        timeout=30,
    )


def accept(client: httpx.Client, device_id: str | None = None) -> str:
    devices = client.get("/api/management/v2/devauth/devices").json()
    dev = next(d for d in devices if device_id in (None, d["id"]))
    aid = dev["auth_sets"][-1]["id"]
    r = client.put(
        f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
        json={"status": "accepted"},
    )
    assert r.status_code == 204, r.text
    return str(dev["id"])
