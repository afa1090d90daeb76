"""The real server side in-process for a simulated mesh (``meshota demo``).

:class:`ApiServer` runs the product's Mender handlers (``bridge.api`` routing table) on a SQLite
store (``bridge.store``) and a blob store in a temporary directory; every call goes through
``router.handle(Request)`` exactly as the HTTP and MQTT adapters make it. Set-up, all over the API:
an admin logs in; every simulated node authenticates with its own ECDSA key (accepted through the
management API) and reports its inventory; a vendor-signed Mender artifact (made by
``mender-artifact``, checked by ``bridge.artifacts`` on upload) is stored; a deployment for every
node is created; every node's ``next`` names it. During the run, :class:`ApiDeviceService` answers
what the simulated nodes ask end to end: the root's artifact download (the signed link from
``next``), the signed chunk map (``/api/meshota/v1/devices/chunk_maps``) and every status report
(``PUT .../deployments/{id}/status``). Afterwards the management API's statistics say how the
deployment went.

The simulator is synchronous; the handlers are async: each call runs to completion on a private
event loop (``loop.run_until_complete``), which is what the virtual clock needs anyway.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bridge.api import ApiContext, Request, Response, Router, Settings, build_router, create_user
from bridge.api._chunk_maps import deployment_key
from bridge.api._limits import ApiLimits
from bridge.artifacts import ArtifactError, BlobStore, VerifyKey, load_verify_key, parse_artifact
from bridge.store import Store
from firmware_proto.testing.group import MemoryDeviceService
from firmware_proto.update_agent import FINAL_STATUSES

__all__ = ["ApiDeviceService", "ApiServer", "ServerSetupError", "make_mender_artifact"]

DEVICE_TYPE = "meshota-sim"
ADMIN = ("demo@meshota.local", "demo-password-1")
_MGMT = "/api/management/v1/deployments"
_DEV_DEPLOY = "/api/devices/v1/deployments/device/deployments"
MENDER_STATUSES = frozenset(
    {"downloading", "installing", "rebooting", "success", "failure", "already-installed"}
)


class ServerSetupError(RuntimeError):
    """The in-process server could not be set up (no mender-artifact, an API call refused)."""


def make_mender_artifact(workdir: Path, name: str, payload: bytes, signing_key_pem: Path) -> bytes:
    """A signed single-file module-image artifact made by the real ``mender-artifact``."""
    tool = shutil.which("mender-artifact")
    if tool is None:
        raise ServerSetupError("mender-artifact is not installed (apt-get install -y mender-artifact)")
    src = workdir / f"payload-{name}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "firmware.bin").write_bytes(payload)
    out = workdir / f"{name}.mender"
    cmd = [
        tool, "write", "module-image", "-T", "single-file", "-t", DEVICE_TYPE, "-n", name,
        "-o", str(out), "--compression", "none", "-f", str(src / "firmware.bin"), "-k", str(signing_key_pem),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise ServerSetupError(f"mender-artifact failed: {exc.stderr.decode(errors='replace')}") from None
    return out.read_bytes()


def _ok(r: Response, *expected: int) -> Response:
    if r.status not in expected:
        raise ServerSetupError(f"server answered {r.status}: {r.body[:200]!r}")
    return r


class ApiServer:
    """The product's handlers on a SQLite file in ``workdir`` (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        vendor_key: ec.EllipticCurvePrivateKey | None = None,
        db_url: str | None = None,
        db_schema: str | None = None,
    ) -> None:
        """``vendor_key``: the vendor whose artifacts this server accepts (default: a new one;
        two servers that exchange bundles share one). ``db_url``/``db_schema``: another store
        than the SQLite file in ``workdir`` (PostgreSQL in tests)."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.loop = asyncio.new_event_loop()
        self.vendor_key = vendor_key or ec.generate_private_key(ec.SECP256R1())
        self.vendor_pem = workdir / "vendor-private.pem"
        self.vendor_pem.write_bytes(
            self.vendor_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        public_pem = self.vendor_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.verify_key: VerifyKey = load_verify_key(public_pem)
        self.db_path = workdir / "meshota.sqlite"
        self.store = Store.open(db_url or f"sqlite:///{self.db_path}", schema=db_schema)
        self.run(self.store.migrate())
        # the simulated mesh runs many times faster than the wall clock the per-root cap on mesh
        # reports counts in: lifted here, kept everywhere else
        limits = ApiLimits(mesh_report_burst=1_000_000)
        settings = Settings(verify_keys=(self.verify_key,), device_status_ttl=0.0, limits=limits)
        self.ctx = self.run(ApiContext.create(self.store, BlobStore(workdir / "artifacts"), settings))
        self.router: Router[ApiContext] = build_router(self.ctx)
        self.calls = 0
        self.user_token = ""
        self.device_ids: dict[int, str] = {}
        self.device_tokens: dict[int, str] = {}

    # -- plumbing ---------------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, method: str, path: str, *, token: str = "", body: Any = None, **extra: Any) -> Response:
        headers = dict(extra.pop("headers", {}))
        if token:
            headers["authorization"] = f"Bearer {token}"
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        if body is not None and not isinstance(body, bytes):
            headers["content-type"] = "application/json"
        parts = urlsplit(path)
        req = Request(
            method,
            parts.path,
            query=parse_qs(parts.query),
            headers=headers,
            body=raw,
            base_url="http://meshota.local",
            **extra,
        )
        self.calls += 1
        response: Response = self.run(self.router.handle(req))
        return response

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    # -- set-up over the API --------------------------------------------------------------------------
    def login_admin(self) -> None:
        async def add() -> None:
            from bridge.store import DEFAULT_ORG_ID, tenant_scope

            with tenant_scope(DEFAULT_ORG_ID):
                async with self.store.transaction() as conn:
                    await create_user(conn, *ADMIN)

        self.run(add())
        basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        r = _ok(
            self.call(
                "POST", "/api/management/v1/useradm/auth/login", headers={"authorization": f"Basic {basic}"}
            ),
            200,
        )
        self.user_token = r.body.decode()

    def enroll(self, node: int, current_artifact: str) -> None:
        """The node asks to join with its own key; the operator accepts it; it reports inventory."""
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        id_data = json.dumps({"mac": f"02:00:00:00:{node >> 8:02x}:{node & 0xFF:02x}"}, separators=(",", ":"))
        body = (json.dumps({"id_data": id_data, "tenant_token": "", "pubkey": pub.decode()}) + "\n").encode()
        sig = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
        auth = "/api/devices/v1/authentication/auth_requests"
        _ok(self.call("POST", auth, body=body, headers={"x-men-signature": sig}), 401)  # pending
        devices = json.loads(
            _ok(
                self.call("GET", "/api/management/v2/devauth/devices?per_page=500", token=self.user_token),
                200,
            ).body
        )
        dev = next(d for d in devices if d["identity_data"].get("mac") == json.loads(id_data)["mac"])
        aid = dev["auth_sets"][0]["id"]
        path = f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status"
        _ok(self.call("PUT", path, token=self.user_token, body={"status": "accepted"}), 204)
        token = _ok(self.call("POST", auth, body=body, headers={"x-men-signature": sig}), 200).body.decode()
        attrs = [
            {"name": "device_type", "value": DEVICE_TYPE},
            {"name": "artifact_name", "value": current_artifact},
        ]
        _ok(
            self.call("PATCH", "/api/devices/v1/inventory/device/attributes", token=token, body=attrs),
            200,
            204,
        )
        self.device_ids[node] = dev["id"]
        self.device_tokens[node] = token

    def upload_artifact(self, data: bytes) -> str:
        async def store() -> str:
            from bridge.api import store_artifact
            from bridge.service import operator
            from bridge.store import DEFAULT_ORG_ID

            # the simulator's operator, through the same service layer as meshota admin
            return await store_artifact(
                self.ctx, data, "meshota demo firmware", by=operator(DEFAULT_ORG_ID, "mesh-sim")
            )

        return str(self.run(store()))

    def create_deployment(self, name: str, artifact_name: str) -> str:
        devices = [self.device_ids[v] for v in sorted(self.device_ids)]
        body = {"name": name, "artifact_name": artifact_name, "devices": devices}
        r = _ok(self.call("POST", f"{_MGMT}/deployments", token=self.user_token, body=body), 201)
        location = dict(r.headers)["Location"]
        return location.rsplit("/", 1)[1]

    def next_deployment(self, node: int, current_artifact: str) -> dict[str, Any]:
        query = f"?artifact_name={current_artifact}&device_type={DEVICE_TYPE}"
        r = _ok(self.call("GET", f"{_DEV_DEPLOY}/next{query}", token=self.device_tokens[node]), 200)
        found: dict[str, Any] = json.loads(r.body)
        return found

    def statistics(self, deployment_id: str) -> dict[str, int]:
        r = _ok(
            self.call("GET", f"{_MGMT}/deployments/{deployment_id}/statistics", token=self.user_token), 200
        )
        stats: dict[str, int] = json.loads(r.body)
        return stats

    def chunk_map_public_key(self) -> ed25519.Ed25519PublicKey:
        """What nodes are provisioned with to check chunk maps (the server's deployment key)."""
        return self.run(deployment_key(self.ctx)).public_key()  # type: ignore[no-any-return]

    def image_ok(self) -> Any:
        """The nodes' secure-boot check: a Mender artifact whose manifest signature verifies
        with the vendor key (``bridge.artifacts.parse_artifact``); cached per image."""
        seen: dict[bytes, bool] = {}
        probe = self.workdir / "verify.mender"

        def check(image: bytes) -> bool:
            digest = hashlib.sha256(image).digest()
            if digest not in seen:
                probe.write_bytes(image)
                try:
                    parse_artifact(probe, keys=(self.verify_key,))
                    seen[digest] = True
                except ArtifactError:
                    seen[digest] = False
            return seen[digest]

        return check


class ApiDeviceService(MemoryDeviceService):
    """What the simulated nodes reach end to end, answered by :class:`ApiServer`'s handlers."""

    def __init__(self, server: ApiServer, artifact_id: str, artifact_name: str, download_uri: str) -> None:
        super().__init__(ed25519.Ed25519PrivateKey.generate())  # unused: the server signs maps
        self.server = server
        self.download_uri = download_uri
        self.status_calls = 0
        self.status_errors: list[str] = []
        self.finished: set[int] = set()
        self.stale_statuses = 0
        self.mesh_reports = 0
        self.mesh_report_bytes = 0
        self.mesh_report_seconds = 0.0  # wall time in the handler
        self.mesh_report_errors: list[str] = []
        data = self._download()
        self.artifacts[artifact_id] = (artifact_name, data)
        self.downloads = 1

    def _download(self) -> bytes:
        r = _ok(self.server.call("GET", self.download_uri), 200)
        if r.file is None:
            return r.body
        with r.file.path.open("rb") as fh:
            fh.seek(r.file.offset)
            return fh.read(r.file.length)

    def fetch_artifact(self, node: int, artifact_id: str) -> bytes:
        """The root downloads the artifact through the signed link ``next`` gave it."""
        self.downloads += 1
        return self._download()

    def chunk_map(self, artifact_id: str, chunk_size: int, node: int | None = None) -> bytes:
        cached = self.maps.get((artifact_id, chunk_size))
        if cached is not None and node is None:
            return cached
        who = node if node is not None else min(self.server.device_tokens)
        path = f"/api/meshota/v1/devices/chunk_maps/{artifact_id}?chunk_size={chunk_size}"
        data = _ok(self.server.call("GET", path, token=self.server.device_tokens[who]), 200).body
        self.maps[(artifact_id, chunk_size)] = data
        return data

    def report_status(self, node: int, deployment_id: str, status: str) -> None:
        """A status the node's session delivered: ``PUT .../deployments/{id}/status``."""
        if status not in MENDER_STATUSES:
            return
        if node in self.finished:  # an earlier status overtaken on the mesh by the final one
            self.stale_statuses += 1
            return
        if status in FINAL_STATUSES:
            self.finished.add(node)
        self.status_calls += 1
        r = self.server.call(
            "PUT",
            f"{_DEV_DEPLOY}/{deployment_id}/status",
            token=self.server.device_tokens[node],
            body={"status": status},
        )
        if r.status != 204:
            self.status_errors.append(f"node {node} {status}: {r.status} {r.body[:100]!r}")

    def node_name(self, node: object) -> str:
        """The device id the server gave a simulated node (its link address is its index)."""
        return self.server.device_ids[node] if isinstance(node, int) else str(node)

    def mesh_report(self, node: int, body: bytes) -> None:
        """A streaming core's progress report: ``POST /api/meshota/v1/devices/mesh/report``."""
        self.mesh_reports += 1
        self.mesh_report_bytes += len(body)
        t0 = time.perf_counter()
        r = self.server.call(
            "POST",
            "/api/meshota/v1/devices/mesh/report",
            token=self.server.device_tokens[node],
            body=body,
            headers={"content-type": "application/vnd.meshota-mesh-report"},
        )
        self.mesh_report_seconds += time.perf_counter() - t0
        if r.status != 204:
            self.mesh_report_errors.append(f"node {node}: {r.status} {r.body[:100]!r}")

    def mesh_view(self) -> list[dict[str, Any]]:
        """What the management API's mesh view shows of the roots' reports."""
        r = _ok(self.server.call("GET", "/api/meshota/v1/management/mesh", token=self.server.user_token), 200)
        return list(json.loads(r.body)["reported_by_roots"])
