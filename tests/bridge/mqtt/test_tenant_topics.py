"""Organisations on the broker (docs/topics.md, "Organisations"): tenant-carrying topics and ACLs.

All real on loopback: mosquitto with the ACL ``meshota broker-config --tenant A --tenant B``
writes, the server with the MQTT bridge, the gateway with a DTLS listener behind a relay, an
MQTT-SN node whose PSK line names organisation A and one in the default organisation. Plus paho
clients holding A's and B's broker credentials.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bridge.api import create_user
from bridge.store import DEFAULT_ORG_ID, gov_tables, tables, tenant_scope
from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.mqttsn_udp import RequestRefused
from firmware_proto.dtls_client import PskClientConfig
from tests.support.mqtt import StampingCaller
from tests.support.mqtt_stack import ServerSide, gateway_side, server_side
from wire.envelope import RequestEnvelope, ResponseEnvelope

pytestmark = pytest.mark.integration

A, B = "0a1b2c3d-aaaa-4000-8000-00000000000a", "0a1b2c3d-bbbb-4000-8000-00000000000b"
PSKS = {
    "node-a": bytes.fromhex("00112233445566778899aabbccddeeff"),
    "node-d": bytes.fromhex("ffeeddccbbaa99887766554433221100"),
}
TENANTS = {"node-a": A}  # the PSK file's third column; node-d: the default organisation
MACS = {"node-a": "02:00:00:00:0a:01", "node-d": "02:00:00:00:0d:01"}
INVENTORY = "/api/devices/v1/inventory/device/attributes"
NEXT = "/api/devices/v1/deployments/device/deployments/next"
ADMIN_A = ("admin-a@example.com", "secret-a-123")


def _setup_orgs(side: ServerSide) -> httpx.Client:
    """Organisations A and B (with the ids the broker ACL names) and an admin of A; A's API client."""

    async def add() -> None:
        async with side.server.context.store.transaction() as conn:
            for org, name in ((A, "alpha"), (B, "beta")):
                await conn.execute(
                    sa.insert(gov_tables.organizations).values(
                        id=org, name=name, tenant_token_sha256=uuid.uuid4().hex, created_ts=time.time()
                    )
                )
        with tenant_scope(A):
            async with side.server.context.store.transaction() as conn:
                await create_user(conn, *ADMIN_A)

    side.server.run_coroutine(add())
    token = httpx.post(f"{side.url}/api/management/v1/useradm/auth/login", auth=ADMIN_A, timeout=30).text
    return httpx.Client(base_url=side.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _macs(mgmt: httpx.Client) -> dict[str, str]:
    listing = mgmt.get("/api/management/v2/devauth/devices", params={"per_page": 500}).json()
    return {d["identity_data"]["mac"]: d["id"] for d in listing}


def _accept(mgmt: httpx.Client, mac: str) -> None:
    dev = next(
        d
        for d in mgmt.get("/api/management/v2/devauth/devices", params={"per_page": 500}).json()
        if d["identity_data"]["mac"] == mac
    )
    aid = dev["auth_sets"][-1]["id"]
    r = mgmt.put(
        f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status", json={"status": "accepted"}
    )
    assert r.status_code == 204, r.text


def _counts(side: ServerSide) -> dict[str, int]:
    """Rows of the device tables in every organisation (what a refusal must leave alone)."""

    async def count() -> dict[str, int]:
        found = {}
        async with side.server.context.store.read() as conn:
            for org in (DEFAULT_ORG_ID, A, B):
                with tenant_scope(org):
                    for t in (tables.devices, tables.auth_sets, tables.inventory):
                        n = (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
                        found[f"{org}:{t.name}"] = int(n)
        return found

    result: dict[str, int] = side.server.run_coroutine(count())
    return result


@pytest.mark.integration
def test_organisations_on_the_broker(tmp_path: Path) -> None:
    with server_side(tmp_path, PSKS, tenants=(A, B)) as side:
        mgmt_a = _setup_orgs(side)
        try:
            tokens = asyncio.run(_nodes(side, mgmt_a))
            _broker_acl(side, tokens)
        finally:
            mgmt_a.close()


async def _nodes(side: ServerSide, mgmt_a: httpx.Client) -> dict[str, str]:
    """Both nodes through the real gateway: node-a lands in A, node-d in the default organisation,
    each answered on its node-visible topics. Returns their device tokens."""
    async with gateway_side(side, PSKS, tenants=TENANTS) as gw:
        devs: dict[str, Any] = {}
        clients = {
            n: DtlsUdpClient(gw.relay_address, n, dtls=PskClientConfig(n, PSKS[n]), retry_interval=1.0)
            for n in PSKS
        }
        for n, c in clients.items():
            await c.__aenter__()
            devs[n] = await MqttSnDevice(c, n, MACS[n], timeout=10).__aenter__()
        try:
            assert [await devs[n].authenticate() for n in ("node-a", "node-d")] == [401, 401]
            # each enrolled where its gateway said: A's admin sees node-a only, the default's node-d only
            assert set(await asyncio.to_thread(_macs, mgmt_a)) == {MACS["node-a"]}
            assert set(await asyncio.to_thread(side.mender_ids)) == {MACS["node-d"]}
            await asyncio.to_thread(_accept, mgmt_a, MACS["node-a"])
            await asyncio.to_thread(side.accept_pending)
            tokens = {}
            for n, dev in devs.items():
                assert await dev.authenticate() == 200
                assert await dev.put_inventory([{"name": "device_type", "value": "t"}]) == 200
                tokens[n] = dev.token
            # no node names an organisation's topic itself: the gateway refuses the SUBSCRIBE and
            # drops the PUBLISH (node-d's gateway user may write A's topics: the broker would not stop it)
            with pytest.raises(RequestRefused):
                await clients["node-a"].subscribe(f"/mender/t/{A}/responses/node-a/#", qos=1)
            raw = RequestEnvelope(
                "raw1", "PATCH", tokens["node-d"], "application/json", b'[{"name":"r","value":1}]'
            )
            await clients["node-d"].publish(_api(A, INVENTORY), raw.encode(), qos=1)
            assert await devs["node-d"].put_inventory([{"name": "after", "value": "raw"}]) == 200
            assert "raw1" not in {rid for *_, rid in side.seen}
        finally:
            for n in PSKS:
                await devs[n].__aexit__(None, None, None)
                await clients[n].__aexit__(None, None, None)
    return tokens


def _api(tenant: str | None, path: str) -> str:
    return (f"/mender/t/{tenant}" if tenant else "/mender") + path


def _broker_acl(side: ServerSide, tokens: dict[str, str]) -> None:
    creds, port = side.creds, side.broker.port
    gw = {"username": side.gateway_user, "password": side.gateway_password}
    as_a, as_b = {"username": A, "password": creds[A]}, {"username": B, "password": creds[B]}
    query = {"artifact_name": ["v1"], "device_type": ["t"]}
    # A's credentials, as node-a: a request on A's topic is answered on A's response topic
    a_node = StampingCaller(port, "node-a", subscribe=f"/mender/t/{A}/responses/node-a/#", **as_a)
    a_node.publish(
        _api(A, NEXT), RequestEnvelope("ra1", "GET", tokens["node-a"], query=query).encode(), "node-a"
    )
    assert ResponseEnvelope.decode(a_node.wait(f"/mender/t/{A}/responses/node-a/ra1")).status == 204
    a_node.close()
    # B's credentials, even with node-a's client id: mosquitto grants the SUBSCRIBE to A's topics
    # and delivers nothing; B's publishes on A's (and the default organisation's) request topics
    # are dropped by the broker: the bridge never sees them
    before, seen = _counts(side), len(side.seen)
    b_spy = StampingCaller(port, "node-a", subscribe=f"/mender/t/{A}/#", **as_b)
    b_all = StampingCaller(port, "spy-b", subscribe="#", **as_b)
    body = b'[{"name":"owned","value":"by-b"}]'
    stolen = RequestEnvelope("rb1", "PATCH", tokens["node-a"], "application/json", body).encode()
    b_all.publish(_api(A, INVENTORY), stolen, "node-a")
    b_all.publish(_api(None, INVENTORY), stolen, "node-a")
    # node-a's request through the installation's gateway user: answered on A's topic, which B
    # cannot read
    gateway = StampingCaller(port, "gw-x", subscribe="gw/none", **gw)
    gateway.publish(
        _api(A, NEXT), RequestEnvelope("ra2", "GET", tokens["node-a"], query=query).encode(), "node-a"
    )
    deadline = time.monotonic() + 15
    while "ra2" not in {rid for *_, rid in side.seen}:
        assert time.monotonic() < deadline, "the bridge never got ra2"
        time.sleep(0.02)
    time.sleep(0.5)  # anything the ACL would leak has arrived by now
    assert b_spy.received == [] and b_all.received == []
    assert "rb1" not in {rid for *_, rid in side.seen[seen:]}
    b_spy.close()
    # the installation's gateway credentials stamping node-a (of A) on B's topic (a gateway whose
    # PSK file says B): the bridge refuses with 403 on B's response topic, nothing written
    wrong = StampingCaller(port, "node-a", subscribe=f"/mender/t/{B}/responses/node-a/#", **as_b)
    gateway.publish(_api(B, INVENTORY), stolen, "node-a")
    refused = ResponseEnvelope.decode(wrong.wait(f"/mender/t/{B}/responses/node-a/rb1"))
    assert refused.status == 403 and b"another organisation" in refused.body
    wrong.close()
    # A's token on the default organisation's (node-visible) topics: 403 as well
    legacy = StampingCaller(port, "node-a", subscribe="/mender/responses/node-a/#", **gw)
    legacy.publish(_api(None, INVENTORY), stolen, "node-a")
    assert ResponseEnvelope.decode(legacy.wait("/mender/responses/node-a/rb1")).status == 403
    legacy.close()
    # node-d's (default organisation) token on A's topic: 403 on A's topic
    env_d = RequestEnvelope("rd1", "PATCH", tokens["node-d"], "application/json", body).encode()
    d_in_a = StampingCaller(port, "node-d", subscribe=f"/mender/t/{A}/responses/node-d/#", **as_a)
    gateway.publish(_api(A, INVENTORY), env_d, "node-d")
    assert ResponseEnvelope.decode(d_in_a.wait(f"/mender/t/{A}/responses/node-d/rd1")).status == 403
    d_in_a.close()
    assert _counts(side) == before
    assert "owned" not in side.server.run_coroutine(_attributes(side, A))
    assert "owned" not in side.server.run_coroutine(_attributes(side, DEFAULT_ORG_ID))
    # ...and on its own topic the same request is the default organisation's, as always
    d_node = StampingCaller(port, "node-d", subscribe="/mender/responses/node-d/#", **gw)
    d_node.publish(_api(None, INVENTORY), env_d.replace(b"rd1", b"rd2"), "node-d")
    assert ResponseEnvelope.decode(d_node.wait("/mender/responses/node-d/rd2")).status == 200
    assert "owned" in side.server.run_coroutine(_attributes(side, DEFAULT_ORG_ID))
    for c in (b_all, gateway, d_node):
        c.close()


async def _attributes(side: ServerSide, org: str) -> set[str]:
    with tenant_scope(org):
        async with side.server.context.store.read() as conn:
            rows = await conn.execute(sa.select(tables.inventory.c.name))
            return {r.name for r in rows}
