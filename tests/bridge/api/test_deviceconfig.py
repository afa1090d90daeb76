"""Device configuration (Mender deviceconfig) against Mender's own OpenAPI 3 specs.

Every answer's status must be one the spec documents for that operation and its JSON body must
validate against the spec's schema (``$ref``s into ../common resolved). SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mender import RunningServer, accept, device_key, device_login

_API = Path(__file__).resolve().parent / "mender_openapi" / "mender-server" / "backend" / "docs" / "api"
DEV_PATH = "/api/devices/v1/deviceconfig/configuration"
MGMT_PATH = "/api/management/v1/deviceconfig/configurations/device/{deviceId}"


def _load(rel: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(yaml.safe_load((_API / rel).read_text()), default=str))
    return doc


def _resolve(node: Any, base: str) -> Any:
    """Inline every ``$ref`` (relative file + JSON pointer) below ``node``."""
    if isinstance(node, dict):
        if "$ref" in node:
            target, _, pointer = node["$ref"].partition("#")
            rel = str((Path(base).parent / target).as_posix()) if target else base
            rel = str(Path(rel)).replace("\\", "/")
            parts = [p for p in rel.split("/") if p != "."]
            stack: list[str] = []
            for p in parts:
                if p == "..":
                    stack.pop()
                else:
                    stack.append(p)
            rel = "/".join(stack)
            doc: Any = _load(rel)
            for key in pointer.strip("/").split("/"):
                doc = doc[key]
            return _resolve(doc, rel)
        return {k: _resolve(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, base) for v in node]
    return node


DEVICE_SPEC = _resolve(_load("deviceconfig/devices_v1.yaml"), "deviceconfig/devices_v1.yaml")
MGMT_SPEC = _resolve(_load("deviceconfig/management_v1.yaml"), "deviceconfig/management_v1.yaml")


def check(spec: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    operation = spec["paths"][path][method.lower()]
    responses = {str(k): v for k, v in operation["responses"].items()}
    code = str(response.status_code)
    assert code in responses, f"{method} {path}: {code} not in spec ({sorted(responses)}): {response.text}"
    schema = responses[code].get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        assert response.content, f"{method} {path}: {code} without the documented body"
        jsonschema_rs.validate(schema, response.json())


@pytest.fixture
def device(running: RunningServer) -> dict[str, Any]:
    key = device_key("ec")
    device_login(running.url, key, "02:00:00:00:0d:01")
    with running.client() as c:
        device_id = accept(c)
    token = device_login(running.url, key, "02:00:00:00:0d:01").text
    return {"id": device_id, "token": token}


def test_configure_report_deploy_round_trip(running: RunningServer, device: dict[str, Any]) -> None:
    dev = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {device['token']}"})
    mgmt_path = MGMT_PATH.format(deviceId=device["id"])
    with running.client() as c, dev:
        r = dev.get(DEV_PATH)
        check(DEVICE_SPEC, DEV_PATH, "GET", r)
        assert r.json() == {}
        r = c.get(mgmt_path)
        check(MGMT_SPEC, MGMT_PATH, "GET", r)
        assert r.json() == {"id": device["id"], "configured": {}, "reported": {}}
        r = c.post(f"{mgmt_path}/deploy", json={})
        assert r.status_code == 400  # nothing configured yet
        check(MGMT_SPEC, MGMT_PATH + "/deploy", "POST", r)

        r = c.put(mgmt_path, json={"timezone": "Europe/Berlin", "ntp": "pool.ntp.org"})
        check(MGMT_SPEC, MGMT_PATH, "PUT", r)
        assert r.status_code == 204
        r = c.post(f"{mgmt_path}/deploy", json={"retries": 2})
        check(MGMT_SPEC, MGMT_PATH + "/deploy", "POST", r)
        deployment_id = r.json()["deployment_id"]

        r = dev.get(DEV_PATH)
        check(DEVICE_SPEC, DEV_PATH, "GET", r)
        assert r.json() == {"timezone": "Europe/Berlin", "ntp": "pool.ntp.org"}
        r = dev.put(DEV_PATH, json={"timezone": "Europe/Berlin"})
        check(DEVICE_SPEC, DEV_PATH, "PUT", r)
        assert r.status_code == 204

        r = c.get(mgmt_path)
        check(MGMT_SPEC, MGMT_PATH, "GET", r)
        body = r.json()
        assert body["configured"] == {"timezone": "Europe/Berlin", "ntp": "pool.ntp.org"}
        assert body["reported"] == {"timezone": "Europe/Berlin"}
        assert body["deployment_id"] == deployment_id
        assert body["reported_ts"].endswith("Z") and body["updated_ts"].endswith("Z")

        # unknown device: 404 where the spec has one; no token: 401 from the auth layer
        unknown = MGMT_PATH.format(deviceId="00000000-0000-0000-0000-000000000000")
        r = c.get(unknown)
        check(MGMT_SPEC, MGMT_PATH, "GET", r)
        assert r.status_code == 404
        assert httpx.get(f"{running.url}{DEV_PATH}").status_code == 401
        assert httpx.get(f"{running.url}{mgmt_path}").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        [],
        "x",
        {"k": 1},
        {"k": None},
        {"": "v"},
        {"k" * 256: "v"},
        {"k": "v" * 4097},
        {f"k{i}": "v" for i in range(101)},
    ],
)
def test_bad_configurations_are_400(running: RunningServer, device: dict[str, Any], body: Any) -> None:
    mgmt_path = MGMT_PATH.format(deviceId=device["id"])
    with running.client() as c, running.client(device["token"]) as dev:
        r = c.put(mgmt_path, json=body)
        assert r.status_code == 400, r.text
        check(MGMT_SPEC, MGMT_PATH, "PUT", r)
        r = dev.put(DEV_PATH, json=body)
        assert r.status_code == 400, r.text
        check(DEVICE_SPEC, DEV_PATH, "PUT", r)
        assert c.get(mgmt_path).json()["configured"] == {}


_JSON = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8),
    lambda s: st.lists(s, max_size=3) | st.dictionaries(st.text(max_size=5), s, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_garbage_reports_get_documented_answers(
    running: RunningServer, device: dict[str, Any], raw: bytes
) -> None:
    with running.client(device["token"]) as dev:
        r = dev.put(DEV_PATH, content=raw, headers={"Content-Type": "application/json"})
    check(DEVICE_SPEC, DEV_PATH, "PUT", r)
    assert r.status_code in (204, 400)
