"""Device API over HTTP (SQLite and PostgreSQL): auth, inventory, next, status, log, download."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.mender import RunningServer, accept, device_key, device_login, make_artifact

DEP = "/api/devices/v1/deployments/device/deployments"


def enrolled(running: RunningServer, kind: str = "rsa", mac: str = "02:00:00:00:00:01") -> tuple[str, str]:
    key = device_key(kind)
    assert device_login(running.url, key, mac).status_code == 401
    with running.client() as c:
        device_id = accept(c)
    r = device_login(running.url, key, mac)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/jwt"
    return device_id, r.text


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_auth_pending_until_accepted(running: RunningServer, kind: str) -> None:
    key = device_key(kind)
    r = device_login(running.url, key, "02:00:00:00:00:aa")
    assert r.status_code == 401
    assert r.json()["error"] == "device authentication pending"
    assert r.json()["request_id"]
    with running.client() as c:
        [dev] = c.get("/api/management/v2/devauth/devices").json()
        assert dev["status"] == "pending"
        assert dev["identity_data"] == {"mac": "02:00:00:00:00:aa"}
        accept(c, dev["id"])
    token = device_login(running.url, key, "02:00:00:00:00:aa").text
    assert token.count(".") == 2


def test_bad_signature_and_missing_signature(running: RunningServer) -> None:
    key, other = device_key("ecdsa"), device_key("ecdsa")
    from tests.support.mender import auth_body

    body, _ = auth_body(key, "02:00:00:00:00:bb")
    _, wrong = auth_body(other, "02:00:00:00:00:bb")
    url = f"{running.url}/api/devices/v1/authentication/auth_requests"
    r = httpx.post(url, content=body, headers={"X-MEN-Signature": wrong})
    assert r.status_code == 401 and "signature" in r.json()["error"]
    assert httpx.post(url, content=body).status_code == 400
    assert httpx.post(url, content=b"{nope", headers={"X-MEN-Signature": wrong}).status_code == 400


def test_preauthorized_device_gets_token_at_once(running: RunningServer) -> None:
    from cryptography.hazmat.primitives import serialization

    key = device_key("ecdsa")
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with running.client() as c:
        r = c.post(
            "/api/management/v2/devauth/devices",
            json={"identity_data": {"mac": "02:00:00:00:00:cc"}, "pubkey": pub.decode()},
        )
        assert r.status_code == 201
        assert (
            c.post(
                "/api/management/v2/devauth/devices",
                json={"identity_data": {"mac": "02:00:00:00:00:cc"}, "pubkey": pub.decode()},
            ).status_code
            == 409
        )
    assert device_login(running.url, key, "02:00:00:00:00:cc").status_code == 200


def test_preauthorize_of_an_accepted_device_is_a_conflict_not_a_token(running: RunningServer) -> None:
    """Regression: the operator's preauthorize call must never answer with a device token."""
    from cryptography.hazmat.primitives import serialization

    key = device_key("ecdsa")
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = "02:00:00:00:00:cd"
    with running.client() as c:
        body = {"identity_data": {"mac": mac}, "pubkey": pub.decode()}
        assert c.post("/api/management/v2/devauth/devices", json=body).status_code == 201
        assert device_login(running.url, key, mac).status_code == 200  # now accepted
        again = c.post("/api/management/v2/devauth/devices", json=body)
        assert again.status_code == 409
        assert "error" in again.json() and again.text.count(".") < 2  # an error body, not a JWT


def test_rejected_and_decommissioned_lose_access(running: RunningServer) -> None:
    device_id, token = enrolled(running)
    auth = {"Authorization": f"Bearer {token}"}
    inv = f"{running.url}/api/devices/v1/inventory/device/attributes"
    assert httpx.put(inv, json=[], headers=auth).status_code == 200
    with running.client() as c:
        dev = c.get(f"/api/management/v2/devauth/devices/{device_id}").json()
        aid = dev["auth_sets"][0]["id"]
        c.put(f"/api/management/v2/devauth/devices/{device_id}/auth/{aid}/status",
              json={"status": "rejected"})  # fmt: skip
        assert httpx.put(inv, json=[], headers=auth).status_code == 401
        accept(c, device_id)
        assert httpx.put(inv, json=[], headers=auth).status_code == 200
        assert c.delete(f"/api/management/v2/devauth/devices/{device_id}").status_code == 204
    assert httpx.put(inv, json=[], headers=auth).status_code == 401
    assert httpx.put(inv, json=[], headers={"Authorization": "Bearer junk"}).status_code == 401


def test_inventory_put_replaces_patch_upserts(running: RunningServer) -> None:
    device_id, token = enrolled(running)
    auth = {"Authorization": f"Bearer {token}"}
    inv = f"{running.url}/api/devices/v1/inventory/device/attributes"
    body = [{"name": "a", "value": "1"}, {"name": "b", "value": ["x", "y"]}]
    assert httpx.put(inv, json=body, headers=auth).status_code == 200
    assert httpx.patch(inv, json=[{"name": "c", "value": 3}], headers=auth).status_code == 200
    assert httpx.put(inv, json=[{"name": "a", "value": "2"}], headers=auth).status_code == 200
    with running.client() as c:
        attrs = c.get(f"/api/management/v1/inventory/devices/{device_id}").json()["attributes"]
    inventory = {a["name"]: a["value"] for a in attrs if a["scope"] == "inventory"}
    assert inventory == {"a": "2"}
    assert {"name": "mac", "value": "02:00:00:00:00:01", "scope": "identity"} in attrs
    assert httpx.put(inv, json={"not": "a list"}, headers=auth).status_code == 400


def _deploy(running: RunningServer, tmp_path: Path, device_id: str, name: str = "art-1") -> str:
    art = make_artifact(tmp_path, name)
    with running.client() as c:
        files = {"artifact": (art.name, art.read_bytes(), "application/octet-stream")}
        assert c.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        r = c.post(
            "/api/management/v1/deployments/deployments",
            json={"name": "d", "artifact_name": name, "devices": [device_id]},
        )
        assert r.status_code == 201, r.text
        return str(r.headers["location"].rsplit("/", 1)[1])


def test_next_all_three_forms_and_status_flow(running: RunningServer, tmp_path: Path) -> None:
    device_id, token = enrolled(running)
    auth = {"Authorization": f"Bearer {token}"}
    provides = {"artifact_name": "initial", "device_type": "test-device"}
    v2 = f"{running.url}/api/devices/v2/deployments/device/deployments/next"
    assert httpx.post(v2, json={"device_provides": provides}, headers=auth).status_code == 204
    dep_id = _deploy(running, tmp_path, device_id)
    r2 = httpx.post(v2, json={"device_provides": provides, "update_control_map": True}, headers=auth)
    r1 = httpx.post(f"{running.url}{DEP}/next", json=provides, headers=auth)
    r0 = httpx.get(f"{running.url}{DEP}/next", params=provides, headers=auth)
    for r in (r2, r1, r0):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == dep_id
        assert body["artifact"]["artifact_name"] == "art-1"
        assert body["artifact"]["device_types_compatible"] == ["test-device"]
        assert body["artifact"]["source"]["uri"].startswith(running.url)
    assert httpx.post(v2, json={"device_provides": {"device_type": "x"}}, headers=auth).status_code == 400

    status = f"{running.url}{DEP}/{dep_id}/status"
    for s in ("downloading", "installing"):
        assert httpx.put(status, json={"status": s}, headers=auth).status_code == 204
    assert httpx.put(status, json={"status": "aborted"}, headers=auth).status_code == 400
    assert httpx.put(status, json={"status": "success"}, headers=auth).status_code == 204
    assert httpx.put(status, json={"status": "success"}, headers=auth).status_code == 204
    with running.client() as c:
        stats = c.get(f"/api/management/v1/deployments/deployments/{dep_id}/statistics").json()
        assert stats["success"] == 1 and stats["pending"] == 0
        assert c.get(f"/api/management/v1/deployments/deployments/{dep_id}").json()["status"] == "finished"
    assert httpx.post(v2, json={"device_provides": provides}, headers=auth).status_code == 204


def test_already_installed_and_noartifact(running: RunningServer, tmp_path: Path) -> None:
    device_id, token = enrolled(running)
    auth = {"Authorization": f"Bearer {token}"}
    dep_id = _deploy(running, tmp_path, device_id)
    r = httpx.get(f"{running.url}{DEP}/next", params={"artifact_name": "art-1",
                  "device_type": "test-device"}, headers=auth)  # fmt: skip
    assert r.status_code == 204
    with running.client() as c:
        stats = c.get(f"/api/management/v1/deployments/deployments/{dep_id}/statistics").json()
        assert stats["already-installed"] == 1
        c.post("/api/management/v1/deployments/deployments",
               json={"name": "d2", "artifact_name": "art-1", "devices": [device_id]})  # fmt: skip
    r = httpx.get(f"{running.url}{DEP}/next", params={"artifact_name": "x",
                  "device_type": "other-type"}, headers=auth)  # fmt: skip
    assert r.status_code == 204
    with running.client() as c:
        deps = c.get("/api/management/v1/deployments/deployments").json()
        d2 = next(d for d in deps if d["name"] == "d2")
        stats = c.get(f"/api/management/v1/deployments/deployments/{d2['id']}/statistics").json()
        assert stats["noartifact"] == 1


def test_abort_gives_409_then_failure_and_log(running: RunningServer, tmp_path: Path) -> None:
    device_id, token = enrolled(running)
    auth = {"Authorization": f"Bearer {token}"}
    dep_id = _deploy(running, tmp_path, device_id)
    status = f"{running.url}{DEP}/{dep_id}/status"
    assert httpx.put(status, json={"status": "downloading"}, headers=auth).status_code == 204
    with running.client() as c:
        r = c.put(f"/api/management/v1/deployments/deployments/{dep_id}/status",
                  json={"status": "aborted"})  # fmt: skip
        assert r.status_code == 204
        again = c.put(f"/api/management/v1/deployments/deployments/{dep_id}/status",
                      json={"status": "aborted"})  # fmt: skip
        assert again.status_code == 422
    assert httpx.put(status, json={"status": "installing"}, headers=auth).status_code == 409
    assert httpx.put(status, json={"status": "failure"}, headers=auth).status_code == 204
    log = {"messages": [{"timestamp": "2026-01-01T00:00:00Z", "level": "error", "message": "boom"}]}
    assert httpx.put(f"{running.url}{DEP}/{dep_id}/log", json=log, headers=auth).status_code == 204
    assert httpx.put(f"{running.url}{DEP}/{dep_id}/log", json={"messages": []},
                     headers=auth).status_code == 400  # fmt: skip
    with running.client() as c:
        text = c.get(f"/api/management/v1/deployments/deployments/{dep_id}/devices/{device_id}/log")
        assert text.status_code == 200 and "error: boom" in text.text
        [dd] = c.get(f"/api/management/v1/deployments/deployments/{dep_id}/devices").json()
        assert dd["status"] == "aborted" and dd["log"] is True


def test_download_range_and_signed_links(running: RunningServer, tmp_path: Path) -> None:
    device_id, token = enrolled(running)
    auth = {"Authorization": f"Bearer {token}"}
    _deploy(running, tmp_path, device_id)
    art = (tmp_path / "art-1.mender").read_bytes()
    r = httpx.get(f"{running.url}{DEP}/next", params={"artifact_name": "initial",
                  "device_type": "test-device"}, headers=auth)  # fmt: skip
    uri = r.json()["artifact"]["source"]["uri"]
    full = httpx.get(uri)
    assert full.status_code == 200
    assert int(full.headers["content-length"]) == len(art) and full.content == art
    part = httpx.get(uri, headers={"Range": "bytes=1000-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-{len(art) - 1}/{len(art)}"
    assert part.content == art[1000:]
    assert httpx.get(uri, headers={"Range": f"bytes={len(art)}-"}).status_code == 416
    tampered = uri.replace("x-men-signature=", "x-men-signature=00")
    assert httpx.get(tampered).status_code == 403
    expired = uri.split("?")[0] + "?x-men-expire=2000-01-01T00:00:00.000Z&x-men-signature=ab"
    assert httpx.get(expired).status_code == 403


def test_error_body_shape(running: RunningServer) -> None:
    r = httpx.get(f"{running.url}/api/devices/v1/nothing-here")
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"error", "request_id"}
    assert r.headers["x-men-requestid"] == body["request_id"]
    assert json.loads(r.content)["error"].startswith("no such resource")
