"""Size limits on everything the device API stores, on both transports (issue 12, items 5 and 8).

One server (uvicorn, SQLite); every test runs once over HTTP and once through the MQTT adapter on
the very same routing table, driven in-process in the server's event loop with a gateway stamp.
The limits are the defaults of ``ApiLimits`` (docs/limits.md).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.api import ApiLimits, Settings, set_auth_status
from bridge.http import BackgroundServer, ServerConfig
from bridge.mqtt import BridgePolicy, MqttApiAdapter, StampedIdentity
from bridge.store import cross_tenant, tables
from tests.support.mender import admin_token, auth_body, device_key, make_artifact
from wire.envelope import RequestEnvelope, ResponseEnvelope, request_topic

AUTH = "/api/devices/v1/authentication/auth_requests"
INV = "/api/devices/v1/inventory/device/attributes"
DEP = "/api/devices/v1/deployments/device/deployments"
CMAP = "/api/meshota/v1/devices/chunk_maps/{id}"
LIMITS = ApiLimits()
TRANSPORTS = ("http", "mqtt")
HYPOTHESIS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def error(self) -> str:
        return str(json.loads(self.body)["error"])


@dataclass
class Side:
    """One device per transport: its token, its deployment, its artifact."""

    server: BackgroundServer
    adapter: MqttApiAdapter
    mgmt: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    deployments: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    undeployed: str = ""
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(
        self,
        transport: str,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, list[str]] | None = None,
        stamp: str = "node-limits",
    ) -> Answer:
        if transport == "http":
            h = dict(headers or {})
            if token:
                h["Authorization"] = f"Bearer {token}"
            if body:
                h["Content-Type"] = "application/json"
            r = httpx.request(
                method, self.server.url + path, content=body, headers=h, params=query, timeout=60
            )
            return Answer(r.status_code, r.content, dict(r.headers))
        rid = f"r{next(self.ids)}"
        env = RequestEnvelope(
            rid, method, token, "application/json" if body else None, body, query or {}, headers or {}
        )
        reply = self.server.run_coroutine(
            self.adapter.handle(request_topic(path), env.encode(), StampedIdentity(stamp, True))
        )
        assert reply is not None
        resp = ResponseEnvelope.decode(reply.payload)
        return Answer(resp.status, resp.body, dict(resp.headers))

    def device(self, transport: str, method: str, path: str, body: bytes = b"", **kw: Any) -> Answer:
        return self.call(transport, method, path, body, token=self.tokens[transport], **kw)

    def count(self, table: sa.Table) -> int:
        async def go() -> int:
            with cross_tenant():  # every organisation's rows
                async with self.server.context.store.read() as conn:
                    counted = await conn.execute(sa.select(sa.func.count()).select_from(table))
                    return int(counted.scalar_one())

        return int(self.server.run_coroutine(go()))


def _accept(server: BackgroundServer, mac: str) -> str:
    async def go() -> str:
        async with server.context.store.transaction() as conn:
            query = sa.select(tables.devices.c.id).where(tables.devices.c.id_data.contains(mac))
            device_id = str((await conn.execute(query)).scalar_one())
            await set_auth_status(conn, device_id, None, "accepted")
            return device_id

    return str(server.run_coroutine(go()))


@pytest.fixture(scope="module")
def side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    tmp = tmp_path_factory.mktemp("limits")
    config = ServerConfig(f"sqlite:///{tmp / 'db.sqlite'}", tmp / "artifacts", port=0, settings=Settings())
    with BackgroundServer(config) as server:
        admin = admin_token(server)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60
        ) as mgmt:
            s = Side(server, MqttApiAdapter(server.app.router, BridgePolicy()), mgmt)  # type: ignore[arg-type]
            for i, transport in enumerate(TRANSPORTS):
                mac = f"02:00:00:00:1e:0{i}"
                body, sig = auth_body(device_key("ed25519"), mac)
                assert s.call(transport, "POST", AUTH, body, headers={"x-men-signature": sig}).status == 401
                s.devices[transport] = _accept(server, mac)
                r = s.call(transport, "POST", AUTH, body, headers={"x-men-signature": sig})
                assert r.status == 200, r.body
                s.tokens[transport] = r.body.decode()
            for name in ("lim-http", "lim-mqtt", "lim-undeployed"):
                art = make_artifact(tmp, name)
                r = mgmt.post(
                    "/api/management/v1/deployments/artifacts",
                    files={"artifact": (art.name, art.read_bytes())},
                )
                assert r.status_code == 201, r.text
                artifact_id = r.headers["location"].rsplit("/", 1)[1]
                transport = name.removeprefix("lim-")
                if transport not in TRANSPORTS:
                    s.undeployed = artifact_id
                    continue
                s.artifacts[transport] = artifact_id
                r = mgmt.post(
                    "/api/management/v1/deployments/deployments",
                    json={"name": name, "artifact_name": name, "devices": [s.devices[transport]]},
                )
                assert r.status_code == 201, r.text
                s.deployments[transport] = r.headers["location"].rsplit("/", 1)[1]
            yield s


def _attrs(n: int, value: Any = "v") -> bytes:
    return json.dumps([{"name": f"a{i}", "value": value} for i in range(n)]).encode()


# -- auth_requests: limits before any signature check or database work ------------------------
def _signed(id_data: str) -> tuple[bytes, str]:
    import base64

    from cryptography.hazmat.primitives import serialization

    key = device_key("ed25519")
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = json.dumps({"id_data": id_data, "pubkey": pub.decode()}).encode()
    return body, base64.b64encode(key.sign(body)).decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_huge_id_data_is_refused_before_any_row(side: Side, transport: str) -> None:
    devices, inventory = side.count(tables.devices), side.count(tables.inventory)
    id_data = json.dumps({f"k{i}": "v" for i in range(100_000)})  # the 2 MB body of the attack
    body, sig = _signed(id_data)
    r = side.call(transport, "POST", AUTH, body, headers={"x-men-signature": sig})
    # the router's per-route body cap (1 MiB) or the handler's auth cap (16 KiB): both before any work
    assert r.status == 413 and "exceeds" in r.error()
    # under the body limit but over the id_data limits: 400, naming the limit
    for bad, needle in (
        (json.dumps({f"k{i}": "v" for i in range(LIMITS.id_data_max_keys + 1)}), "keys"),
        (json.dumps({"mac": "x" * LIMITS.id_data_max_bytes}), "bytes"),
        (json.dumps({"mac": [["nested"]]}), "nested"),
        ("[" * 900 + "]" * 900, "JSON object"),
    ):
        body, sig = _signed(bad)
        r = side.call(transport, "POST", AUTH, body, headers={"x-men-signature": sig})
        assert r.status == 400 and needle in r.error(), r.body
    assert (side.count(tables.devices), side.count(tables.inventory)) == (devices, inventory)


@pytest.mark.parametrize("transport", TRANSPORTS)
@HYPOTHESIS
@given(keys=st.integers(min_value=1, max_value=LIMITS.id_data_max_keys + 8))
def test_id_data_key_count(side: Side, transport: str, keys: int) -> None:
    id_data = json.dumps({f"{transport}-{keys}-{i}": "v" for i in range(keys)}, separators=(",", ":"))
    body, sig = _signed(id_data)
    r = side.call(transport, "POST", AUTH, body, headers={"x-men-signature": sig}, stamp=f"n-{keys}")
    if keys <= LIMITS.id_data_max_keys:
        assert r.status in (401, 403), r.body  # accepted for checking: pending (or bound elsewhere)
    else:
        assert r.status == 400 and f"at most {LIMITS.id_data_max_keys}" in r.error()


def test_huge_rsa_exponent_is_refused(side: Side) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    n = device_key("rsa").public_key().public_numbers().n
    pub = rsa.RSAPublicNumbers(2**2000 + 1, n).public_key()  # verification as costly as signing
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = json.dumps({"id_data": '{"mac":"x"}', "pubkey": pem.decode()}).encode()
    for transport in TRANSPORTS:
        r = side.call(transport, "POST", AUTH, body, headers={"x-men-signature": "AAAA"})
        assert r.status == 400 and "RSA keys are limited" in r.error()


# -- inventory --------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_inventory_attribute_count(side: Side, transport: str) -> None:
    n = LIMITS.inventory_max_attributes
    assert side.device(transport, "PUT", INV, _attrs(n)).status == 200
    r = side.device(transport, "PUT", INV, _attrs(n + 1))
    assert r.status == 400 and f"at most {n}" in r.error()
    # PATCH upserts: new names may not grow the stored set past the cap either
    r = side.device(transport, "PATCH", INV, json.dumps([{"name": "one-more", "value": 1}]).encode())
    assert r.status == 400 and "at most" in r.error()
    # ...but replacing existing names is fine
    assert side.device(transport, "PATCH", INV, _attrs(3, "new")).status == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
@HYPOTHESIS
@given(
    size=st.integers(
        min_value=LIMITS.inventory_value_max_bytes - 40, max_value=LIMITS.inventory_value_max_bytes + 40
    )
)
def test_inventory_value_size(side: Side, transport: str, size: int) -> None:
    value = "x" * (size - 2)  # JSON-encoded: the quotes make it `size` bytes
    r = side.device(transport, "PUT", INV, json.dumps([{"name": "big", "value": value}]).encode())
    if size <= LIMITS.inventory_value_max_bytes:
        assert r.status == 200, r.body
    else:
        assert r.status == 400 and "exceeds the limit" in r.error()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_inventory_body_and_list_values(side: Side, transport: str) -> None:
    big_list = ["y" * 100] * 60  # each element small, the list over the value limit
    r = side.device(transport, "PUT", INV, json.dumps([{"name": "l", "value": big_list}]).encode())
    assert r.status == 400 and "'l'" in r.error()
    r = side.device(
        transport, "PUT", INV, json.dumps([{"name": "d", "value": 1, "description": "z" * 2000}]).encode()
    )
    assert r.status == 400 and "description" in r.error()
    body = b"[" + b" " * LIMITS.inventory_body_max + b"]"  # a 50 MiB value's first half MiB
    r = side.device(transport, "PUT", INV, body)
    assert r.status == 413 and "inventory body" in r.error()


# -- deployment status and log ------------------------------------------------------------------
def _log(n: int, text: str = "line") -> bytes:
    messages = [{"timestamp": "2026-12-05T09:00:00Z", "level": "info", "message": text} for _ in range(n)]
    return json.dumps({"messages": messages}).encode()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deployment_log_limits(side: Side, transport: str) -> None:
    path = f"{DEP}/{side.deployments[transport]}/log"
    r = side.device(transport, "PUT", path, _log(LIMITS.log_max_messages + 1, "x"))
    assert r.status == 400 and f"at most {LIMITS.log_max_messages}" in r.error()
    r = side.device(transport, "PUT", path, _log(1, "m" * (LIMITS.log_message_max + 1)))
    assert r.status == 400 and f"at most {LIMITS.log_message_max}" in r.error()
    r = side.device(transport, "PUT", path, _log(200, "m" * 6000))  # ~1.2 MB
    # the router's per-route cap and the log body limit are both 1 MiB: whichever refuses, it is 413
    assert r.status == 413 and ("deployment log body" in r.error() or "body exceeds" in r.error())
    extra = {"messages": [{"timestamp": "t", "level": "info", "message": "ok", "junk": ["z"] * 50}]}
    assert side.device(transport, "PUT", path, json.dumps(extra).encode()).status == 204
    device = side.devices[transport]
    r2 = side.mgmt.get(
        f"/api/management/v1/deployments/deployments/{side.deployments[transport]}/devices/{device}/log"
    )
    assert r2.status_code == 200 and r2.text == "t info: ok\n"  # only the three fields are kept


@pytest.mark.parametrize("transport", TRANSPORTS)
@HYPOTHESIS
@given(length=st.integers(min_value=LIMITS.substate_max - 5, max_value=LIMITS.substate_max + 5))
def test_status_substate_length(side: Side, transport: str, length: int) -> None:
    path = f"{DEP}/{side.deployments[transport]}/status"
    body = json.dumps({"status": "downloading", "substate": "s" * length}).encode()
    r = side.device(transport, "PUT", path, body)
    if length <= LIMITS.substate_max:
        assert r.status == 204, r.body
    else:
        assert r.status == 400 and f"at most {LIMITS.substate_max}" in r.error()


# -- chunk maps -------------------------------------------------------------------------------
def _cmap(side: Side, transport: str, artifact_id: str, chunk_size: int) -> Answer:
    return side.device(transport, "GET", CMAP.format(id=artifact_id), query={"chunk_size": [str(chunk_size)]})


def _cached_sizes(side: Side, artifact_id: str) -> list[str]:
    async def go() -> list[str]:
        async with side.server.context.store.read() as conn:
            rows = await conn.execute(
                sa.select(tables.settings.c.key).where(
                    tables.settings.c.key.startswith(f"cmap:{artifact_id}:")
                )
            )
            return sorted(rows.scalars())

    return list(side.server.run_coroutine(go()))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chunk_maps_only_for_deployed_artifacts(side: Side, transport: str) -> None:
    r = _cmap(side, transport, side.undeployed, 256)
    assert r.status == 404 and r.error() == "artifact not found"
    assert _cached_sizes(side, side.undeployed) == []  # nothing was signed or kept for it
    assert _cmap(side, transport, side.artifacts[transport], 256).status in (200, 206)
    # an artifact still being deployed to another device: a group root fetches it for its targets
    other = "mqtt" if transport == "http" else "http"
    assert _cmap(side, transport, side.artifacts[other], 256).status in (200, 206)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chunk_map_sizes_per_artifact(side: Side, transport: str) -> None:
    artifact_id = side.artifacts[transport]
    sizes = [128, 192, 320, 448, 512, 640, 1000]
    answers = {size: _cmap(side, transport, artifact_id, size) for size in sizes}
    kept = _cached_sizes(side, artifact_id)
    assert len(kept) == LIMITS.chunk_map_sizes_per_artifact
    refused = [size for size, r in answers.items() if r.status == 400]
    assert refused and all("ask for one of" in answers[s].error() for s in refused)
    # a size already kept is still served
    first_kept = int(kept[0].rsplit(":", 1)[1])
    assert _cmap(side, transport, artifact_id, first_kept).status in (200, 206)


def test_deleting_an_artifact_drops_its_chunk_maps(side: Side, tmp_path: Path) -> None:
    art = make_artifact(tmp_path, "lim-deleted")
    r = side.mgmt.post(
        "/api/management/v1/deployments/artifacts", files={"artifact": (art.name, art.read_bytes())}
    )
    artifact_id = r.headers["location"].rsplit("/", 1)[1]
    r = side.mgmt.post(
        "/api/management/v1/deployments/deployments",
        json={"name": "d", "artifact_name": "lim-deleted", "devices": [side.devices["http"]]},
    )
    assert r.status_code == 201
    assert _cmap(side, "http", artifact_id, 256).status == 200
    assert len(_cached_sizes(side, artifact_id)) == 1
    dep = r.headers["location"].rsplit("/", 1)[1]
    assert (
        side.mgmt.put(
            f"/api/management/v1/deployments/deployments/{dep}/status", json={"status": "aborted"}
        ).status_code
        == 204
    )
    # finished for its only target: no other device gets its maps any more, the target still does
    assert _cmap(side, "mqtt", artifact_id, 256).status == 404
    assert _cmap(side, "http", artifact_id, 256).status == 200
    assert side.mgmt.delete(f"/api/management/v1/deployments/artifacts/{artifact_id}").status_code == 204
    assert _cached_sizes(side, artifact_id) == []
