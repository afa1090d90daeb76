"""Management API over HTTP: useradm, artifacts (incl. malformed uploads), devauth, inventory
groups, deployments. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.support.mender import ADMIN, RunningServer, accept, device_key, device_login, make_artifact

ARTS = "/api/management/v1/deployments/artifacts"
DEPS = "/api/management/v1/deployments/deployments"


def upload(c: httpx.Client, path: Path, data: bytes | None = None) -> httpx.Response:
    files = {"artifact": (path.name, data if data is not None else path.read_bytes())}
    return c.post(ARTS, data={"size": "1", "description": "d"}, files=files)


def nothing_stored(running: RunningServer) -> None:
    with running.client() as c:
        assert c.get(ARTS).json() == []
    assert not list((running.artifacts_dir / "objects").glob("*/*"))
    assert not list((running.artifacts_dir / "tmp").iterdir())


def test_login(running: RunningServer) -> None:
    url = f"{running.url}/api/management/v1/useradm/auth/login"
    assert httpx.post(url, auth=(ADMIN[0], "nope-nope")).status_code == 401
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, auth=ADMIN).status_code == 200
    assert httpx.get(f"{running.url}{ARTS}").status_code == 401
    assert httpx.get(f"{running.url}{ARTS}", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    with running.client() as c:
        r = c.post("/api/management/v1/useradm/users", json={"email": "b@x", "password": "12345678"})
        assert r.status_code == 201
        assert c.post("/api/management/v1/useradm/users",
                      json={"email": "b@x", "password": "12345678"}).status_code == 409  # fmt: skip
        assert len(c.get("/api/management/v1/useradm/users").json()) == 2


def test_artifact_upload_show_download_delete(running: RunningServer, tmp_path: Path) -> None:
    art = make_artifact(tmp_path, "a1", compression="lzma")
    with running.client() as c:
        r = upload(c, art)
        assert r.status_code == 201, r.text
        art_id = r.headers["location"].rsplit("/", 1)[1]
        assert upload(c, art).status_code == 409
        meta = c.get(f"{ARTS}/{art_id}").json()
        assert meta["name"] == "a1" and meta["signed"] is False
        assert meta["info"] == {"format": "mender", "version": 3}
        assert meta["size"] == art.stat().st_size
        assert meta["updates"][0]["type_info"] == {"type": "single-file"}
        assert isinstance(meta["updates"][0]["meta_data"], list)
        link = c.get(f"{ARTS}/{art_id}/download").json()
        assert httpx.get(link["uri"]).content == art.read_bytes()
        assert c.delete(f"{ARTS}/{art_id}").status_code == 204
        assert c.get(f"{ARTS}/{art_id}").status_code == 404
    nothing_stored(running)


def _truncated(p: Path) -> bytes:
    return p.read_bytes()[: p.stat().st_size // 2]


def _traversal(p: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as out, tarfile.open(p) as src:
        for m in src:
            out.addfile(m, src.extractfile(m))
            if m.name == "version":
                evil = tarfile.TarInfo("../../etc/evil")
                evil.size = 1
                out.addfile(evil, io.BytesIO(b"x"))
    return buf.getvalue()


def _bad_checksum(p: Path) -> bytes:
    data = bytearray(p.read_bytes())
    with tarfile.open(p) as src:
        m = src.getmember("manifest")
    data[m.offset_data] ^= 0x01  # flips one hex digit of the first checksum
    return bytes(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_truncated, "truncated"),
        (_traversal, "unsafe path"),
        (_bad_checksum, "checksum mismatch"),
        (lambda p: b"garbage" * 1000, "invalid artifact"),
    ],
)
def test_malformed_upload_rejected_nothing_stored(
    running: RunningServer, tmp_path: Path, mutate: object, message: str
) -> None:
    art = make_artifact(tmp_path, "bad")
    with running.client() as c:
        r = upload(c, art, mutate(art))  # type: ignore[operator]
    assert r.status_code == 400
    assert message in r.json()["error"]
    nothing_stored(running)


def test_multipart_errors(running: RunningServer) -> None:
    with running.client() as c:
        assert c.post(ARTS, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 400
        r = c.post(ARTS, data={"description": "no file"}, files={"other": ("f", b"x")})
        assert r.status_code == 400 and "artifact" in r.json()["error"]


def test_devices_groups_and_group_deployment(running: RunningServer, tmp_path: Path) -> None:
    keys = [device_key("ecdsa") for _ in range(3)]
    for i, k in enumerate(keys):
        device_login(running.url, k, f"02:00:00:00:01:0{i}")
    with running.client() as c:
        devices = c.get("/api/management/v2/devauth/devices?status=pending").json()
        assert len(devices) == 3
        ids = [d["id"] for d in devices]
        for d in ids[:2]:
            accept(c, d)
        assert len(c.get("/api/management/v2/devauth/devices?status=accepted").json()) == 2
        assert len(c.get("/api/management/v2/devauth/devices?per_page=1&page=2").json()) == 1
        assert c.get("/api/management/v2/devauth/devices?status=bogus").status_code == 400
        assert c.put(f"/api/management/v1/inventory/devices/{ids[0]}/group",
                     json={"group": "staging"}).status_code == 204  # fmt: skip
        r = c.patch("/api/management/v1/inventory/groups/staging/devices", json=[ids[1]])
        assert r.status_code == 200 and r.json()["updated_count"] == 1
        assert c.get("/api/management/v1/inventory/groups").json() == ["staging"]
        members = c.get("/api/management/v1/inventory/groups/staging/devices").json()
        assert sorted(members) == sorted(ids[:2])
        listed = c.get("/api/management/v1/inventory/devices?group=staging")
        assert listed.headers["x-total-count"] == "2"
        assert len(c.get("/api/management/v1/inventory/devices?has_group=false").json()) == 1

        art = make_artifact(tmp_path, "g1")
        assert upload(c, art).status_code == 201
        r = c.post(f"{DEPS}/group/staging", json={"name": "to-staging", "artifact_name": "g1"})
        assert r.status_code == 201
        dep_id = r.headers["location"].rsplit("/", 1)[1]
        dep = c.get(f"{DEPS}/{dep_id}").json()
        assert dep["device_count"] == 2 and dep["status"] == "pending"
        assert dep["groups"] == ["staging"]
        devs = c.get(f"{DEPS}/{dep_id}/devices").json()
        assert sorted(d["id"] for d in devs) == sorted(ids[:2])
        assert c.post(f"{DEPS}/group/none", json={"name": "x", "artifact_name": "g1"}).status_code == 404
        assert c.post(DEPS, json={"name": "x", "artifact_name": "missing",
                                  "devices": ids}).status_code == 422  # fmt: skip
        assert c.post(DEPS, json={"name": "x", "artifact_name": "g1",
                                  "devices": ["nope"]}).status_code == 404  # fmt: skip
        assert c.post(DEPS, json={"name": "x", "artifact_name": "g1",
                                  "all_devices": True}).status_code == 201  # fmt: skip
        listing = c.get(f"{DEPS}?status=pending")
        assert listing.headers["x-total-count"] == "2"
        assert c.delete(f"/api/management/v1/inventory/devices/{ids[0]}/group/staging").status_code == 204
        assert c.delete(f"/api/management/v2/devauth/devices/{ids[2]}").status_code == 204
        assert len(c.get("/api/management/v2/devauth/devices").json()) == 2
        search = c.post("/api/management/v2/inventory/filters/search",
                        json={"filters": [{"scope": "system", "attribute": "group",
                                           "type": "$eq", "value": "staging"}]})  # fmt: skip
        assert [d["id"] for d in search.json()] == [ids[1]]


def test_chunk_map_key_for_provisioning_nodes(running: RunningServer) -> None:
    """The operator reads the public key nodes check chunk maps with (user token only); it is the
    same on every call (created once, kept in the settings table)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = "/api/meshota/v1/management/chunk_map_key"
    assert httpx.get(f"{running.url}{path}").status_code == 401
    with running.client() as c:
        first, second = c.get(path), c.get(path)
    assert first.status_code == 200 and first.headers["content-type"] == "application/x-pem-file"
    assert first.content == second.content
    assert isinstance(serialization.load_pem_public_key(first.content), ed25519.Ed25519PublicKey)
