"""Parity: every device API route answers the same over HTTP and over MQTT (same routing table)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bridge.api import ROUTES, create_user
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from tests.support.broker import start_test_mosquitto
from tests.support.mender import (
    ADMIN,
    accept,
    auth_body,
    device_key,
    make_artifact,
)
from tests.support.mqtt import StampingCaller, start_bridge_server

DEVICE = "node-parity"
DEP = "/api/devices/v1/deployments/device/deployments"
AUTH = "/api/devices/v1/authentication/auth_requests"


@dataclass
class World:
    http: httpx.Client
    mqtt: StampingCaller
    token: str  # issued over HTTP
    mqtt_token: str  # issued over MQTT: bound to DEVICE (the stamped identity)
    auth: tuple[bytes, str]
    deployment: str
    link: str  # path?query of the artifact download
    artifact_size: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("parity")
    broker = start_test_mosquitto(tmp / "mosquitto")
    server = start_bridge_server(f"sqlite:///{tmp / 'db.sqlite'}", tmp, broker.port)
    try:

        async def add() -> None:
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
                async with server.context.store.transaction() as conn:
                    await create_user(conn, *ADMIN)

        server.run_coroutine(add())
        admin = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
        mgmt = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        key = device_key("ecdsa")
        body, sig = auth_body(key, "02:00:00:00:00:77")
        url = f"{server.url}/api/devices/v1/authentication/auth_requests"
        assert httpx.post(url, content=body, headers={"X-MEN-Signature": sig}).status_code == 401
        device_id = accept(mgmt)
        token = httpx.post(url, content=body, headers={"X-MEN-Signature": sig}).text
        art = make_artifact(tmp, "parity-v1")
        r = mgmt.post(
            "/api/management/v1/deployments/artifacts", files={"artifact": (art.name, art.read_bytes())}
        )
        assert r.status_code == 201, r.text
        r = mgmt.post(
            "/api/management/v1/deployments/deployments",
            json={"name": "p", "artifact_name": "parity-v1", "devices": [device_id]},
        )
        assert r.status_code == 201, r.text
        nxt = httpx.post(
            f"{server.url}/api/devices/v2/deployments/device/deployments/next",
            json={"device_provides": {"device_type": "test-device", "artifact_name": "v0"}},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        uri = urlsplit(nxt["artifact"]["source"]["uri"])
        caller = StampingCaller(broker.port)
        auth = caller.call(DEVICE, "POST", AUTH, body=body, headers={"x-men-signature": sig})
        assert auth.status == 200, auth.body
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield World(
                http,
                caller,
                token,
                auth.body.decode(),
                (body, sig),
                nxt["id"],
                f"{uri.path}?{uri.query}",
                art.stat().st_size,
            )
        caller.close()
        mgmt.close()
    finally:
        server.stop()
        broker.stop()


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    with_token: bool = True


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


PROVIDES = {"device_type": "test-device", "artifact_name": "v0"}
INVENTORY = _json([{"name": "device_type", "value": "test-device"}, {"name": "mqtt", "value": "yes"}])
SPECS: dict[tuple[str, str], Callable[[World], Call]] = {
    ("POST", "/api/devices/v1/authentication/auth_requests"): lambda w: Call(
        "POST",
        "/api/devices/v1/authentication/auth_requests",
        w.auth[0],
        (("x-men-signature", w.auth[1]),),
        with_token=False,
    ),
    ("PUT", "/api/devices/v1/inventory/device/attributes"): lambda w: Call(
        "PUT", "/api/devices/v1/inventory/device/attributes", INVENTORY
    ),
    ("PATCH", "/api/devices/v1/inventory/device/attributes"): lambda w: Call(
        "PATCH", "/api/devices/v1/inventory/device/attributes", INVENTORY
    ),
    ("POST", "/api/devices/v2/deployments/device/deployments/next"): lambda w: Call(
        "POST", "/api/devices/v2/deployments/device/deployments/next", _json({"device_provides": PROVIDES})
    ),
    ("POST", f"{DEP}/next"): lambda w: Call("POST", f"{DEP}/next", _json(PROVIDES)),
    ("GET", f"{DEP}/next"): lambda w: Call("GET", f"{DEP}/next", query=tuple(PROVIDES.items())),
    ("PUT", f"{DEP}/{{id}}/status"): lambda w: Call(
        "PUT", f"{DEP}/{w.deployment}/status", _json({"status": "downloading"})
    ),
    ("PUT", f"{DEP}/{{id}}/log"): lambda w: Call(
        "PUT",
        f"{DEP}/{w.deployment}/log",
        _json({"messages": [{"timestamp": "2024-01-01T00:00:00Z", "level": "info", "message": "hi"}]}),
    ),
    ("GET", "/api/devices/v1/deployments/download/artifacts/{id}"): lambda w: Call(
        "GET",
        w.link.split("?")[0],
        headers=(("range", "bytes=100-299"),),
        query=tuple((k, v[0]) for k, v in parse_qs(w.link.split("?")[1]).items()),
        with_token=False,
    ),
    ("GET", "/api/devices/v1/deviceconfig/configuration"): lambda w: Call(
        "GET", "/api/devices/v1/deviceconfig/configuration"
    ),
    ("PUT", "/api/devices/v1/deviceconfig/configuration"): lambda w: Call(
        "PUT", "/api/devices/v1/deviceconfig/configuration", _json({"tz": "UTC"})
    ),
}
DEVICE_ROUTES = sorted((r.method, r.pattern) for r in ROUTES if r.pattern.startswith("/api/devices/"))


def test_specs_cover_the_whole_device_routing_table() -> None:
    assert sorted(SPECS) == DEVICE_ROUTES


def _normalise(status: int, content_type: str | None, body: bytes) -> Any:
    if not body or not (content_type or "").startswith(("application/json", "application/jwt")):
        return body
    if content_type == "application/jwt":
        claims = json.loads(base64.urlsafe_b64decode(body.split(b".")[1] + b"=="))
        # meshota.tid: only a token issued over MQTT is bound to the stamped identity (checked apart)
        return {k: v for k, v in claims.items() if k not in ("iat", "exp", "nbf", "meshota.tid")}
    obj = json.loads(body)
    if isinstance(obj, dict):
        obj.pop("request_id", None)
        source = obj.get("artifact", {}).get("source") if isinstance(obj.get("artifact"), dict) else None
        if source:  # the link is signed with an expiry second: compare where it points
            source["uri"] = urlsplit(source["uri"]).path
            source.pop("expire")
    return obj


def _compare(w: World, call: Call, *, token: str | None, mqtt_token: str | None) -> tuple[int, Any]:
    headers = dict(call.headers)
    if token:
        headers["authorization"] = f"Bearer {token}"
    if call.body:
        headers["content-type"] = "application/json"
    r = w.http.request(call.method, call.path, content=call.body, headers=headers, params=list(call.query))
    m = w.mqtt.call(
        DEVICE,
        call.method,
        call.path,
        body=call.body,
        token=mqtt_token,
        headers={k: v for k, v in call.headers},
        query={k: [v] for k, v in call.query},
    )
    assert m.status == r.status_code, (call, r.text, m.body)
    assert m.headers.get("content-type") == r.headers.get("content-type")
    assert m.headers.get("content-range") == r.headers.get("content-range")
    http_body = _normalise(r.status_code, r.headers.get("content-type"), r.content)
    mqtt_body = _normalise(m.status, m.headers.get("content-type"), m.body)
    assert mqtt_body == http_body
    if m.headers.get("content-type") == "application/jwt":
        claims = json.loads(base64.urlsafe_b64decode(m.body.split(b".")[1] + b"=="))
        assert claims["meshota.tid"] == DEVICE
    return m.status, mqtt_body


@pytest.mark.integration
@pytest.mark.parametrize("route", DEVICE_ROUTES, ids=[f"{m} {p}" for m, p in DEVICE_ROUTES])
def test_same_answer_over_http_and_mqtt(world: World, route: tuple[str, str]) -> None:
    call = SPECS[route](world)
    if call.with_token:
        status, _ = _compare(world, call, token=world.token, mqtt_token=world.mqtt_token)
    else:
        status, _ = _compare(world, call, token=None, mqtt_token=None)
    assert status < 300
    # and the same refusal when the credentials are wrong
    if call.with_token:
        bad = _compare(world, call, token="not-a-token", mqtt_token="not-a-token")
    else:
        broken = Call(
            call.method, call.path, call.body[:-2] if call.body else b"", call.headers, call.query[:1]
        )
        bad = _compare(world, broken, token=None, mqtt_token=None)
    assert bad[0] >= 400 and bad[1]["error"]


@pytest.mark.integration
def test_download_is_block_wise_and_resumable(world: World) -> None:
    call = SPECS[("GET", "/api/devices/v1/deployments/download/artifacts/{id}")](world)
    query = {k: [v] for k, v in call.query}
    got = b""
    while len(got) < world.artifact_size:
        m = world.mqtt.call(DEVICE, "GET", call.path, query=query, headers={"range": f"bytes={len(got)}-"})
        assert m.status == 206
        assert len(m.body) <= 256  # the bridge's block size in this test
        assert (
            m.headers["content-range"]
            == f"bytes {len(got)}-{len(got) + len(m.body) - 1}/{world.artifact_size}"
        )
        got += m.body
    r = world.http.get(call.path, params=list(call.query))
    assert got == r.content


@pytest.mark.integration
def test_a_roots_mesh_report_over_mqtt_is_the_same_handler(world: World) -> None:
    """``POST /api/meshota/v1/devices/mesh/report`` (wire/SPEC.md §7) over the bridge: stored as
    over HTTP, refused the same way (a meshota route: outside the Mender table above)."""
    from wire.chunk_map import ChunkMap
    from wire.mesh_report import MeshReport, encode_mesh_report

    auth = {"authorization": f"Bearer {world.token}"}
    artifacts = world.http.get(
        f"{DEP}/next", params={"device_type": "test-device", "artifact_name": "v0"}, headers=auth
    )
    aid = artifacts.json()["artifact"]["id"]
    cmap = world.http.get(
        f"/api/meshota/v1/devices/chunk_maps/{aid}", params={"chunk_size": 512}, headers=auth
    )
    sid = ChunkMap.decode(cmap.content).head.stream_id()
    path = "/api/meshota/v1/devices/mesh/report"
    ctype = {"content-type": "application/vnd.meshota-mesh-report"}
    good = encode_mesh_report(MeshReport(sid, aid, "parity-v1", 0, 1, 9, 4321, 12, 0, ()))
    m = world.mqtt.call(DEVICE, "POST", path, body=good, token=world.mqtt_token, headers=ctype)
    assert m.status == 204, m.body
    bad = encode_mesh_report(MeshReport(b"\x09" * 8, aid, "parity-v1", 0, 1, 9, 4321, 12, 0, ()))
    m = world.mqtt.call(DEVICE, "POST", path, body=bad, token=world.mqtt_token, headers=ctype)
    r = world.http.post(path, content=bad, headers={**auth, **ctype})
    assert m.status == r.status_code == 403 and json.loads(m.body)["error"] == r.json()["error"]
    admin = httpx.post(f"{world.http.base_url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
    view = world.http.get("/api/meshota/v1/management/mesh", headers={"authorization": f"Bearer {admin}"})
    (stream,) = view.json()["reported_by_roots"]
    assert stream["stream_id"] == sid.hex() and stream["roots"][0]["bytes_on_air"] == 4321
