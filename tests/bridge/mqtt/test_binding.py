"""Token <-> transport identity binding: a device can never act as another over MQTT.

Transport-free (the MQTT adapter on the real routing table, SQLite and PostgreSQL) for the
rules, and once through real mosquitto for "device A's token on device B's connection".
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bridge.api import ApiContext, Request, Router, Settings, build_router, create_user, set_auth_status
from bridge.artifacts import BlobStore
from bridge.mqtt import BridgePolicy, MqttApiAdapter, StampedIdentity
from bridge.store import Store, tables
from tests.support.broker import start_test_mosquitto
from tests.support.mender import ADMIN, Db, accept, auth_body, device_key
from tests.support.mqtt import StampingCaller, start_bridge_server
from wire.envelope import RequestEnvelope, ResponseEnvelope, request_topic

AUTH = "/api/devices/v1/authentication/auth_requests"
INV = "/api/devices/v1/inventory/device/attributes"
Scenario = Callable[[ApiContext, Router[ApiContext]], Awaitable[None]]


def run(db: Db, tmp_path: Path, scenario: Scenario) -> None:
    async def go() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            ctx = await ApiContext.create(store, BlobStore(tmp_path / "art"), Settings())
            await scenario(ctx, build_router(ctx))
        finally:
            await store.close()

    asyncio.run(go())


class Node:
    """One device speaking through the adapter with a given stamp (what the gateway adds)."""

    def __init__(self, adapter: MqttApiAdapter, stamp: str, mac: str, *, verified: bool = True) -> None:
        self.adapter, self.who = adapter, StampedIdentity(stamp, verified)
        self.mac = mac
        self.auth = auth_body(device_key("ed25519"), mac)
        self.n = 0

    async def call(
        self, method: str, path: str, body: bytes = b"", token: str | None = None, **kw: Any
    ) -> ResponseEnvelope:
        self.n += 1
        env = RequestEnvelope(f"r{self.n}", method, token, "application/json" if body else None, body, **kw)
        reply = await self.adapter.handle(request_topic(path), env.encode(), self.who)
        assert reply is not None
        return ResponseEnvelope.decode(reply.payload)

    async def authenticate(self, auth: tuple[bytes, str] | None = None) -> ResponseEnvelope:
        body, sig = auth or self.auth
        return await self.call("POST", AUTH, body, headers={"x-men-signature": sig})


async def accept_mac(ctx: ApiContext, mac: str) -> str:
    async with ctx.store.transaction() as conn:
        query = sa.select(tables.devices.c.id).where(tables.devices.c.id_data.contains(mac))
        device_id = str((await conn.execute(query)).scalar_one())
        await set_auth_status(conn, device_id, None, "accepted")
    return device_id


async def enrolled(ctx: ApiContext, node: Node) -> tuple[str, str]:
    """(Mender device id, token) after pending -> accepted -> token, all over the node's stamp."""
    assert (await node.authenticate()).status == 401
    device_id = await accept_mac(ctx, node.mac)
    r = await node.authenticate()
    assert r.status == 200, r.body
    return device_id, r.body.decode()


def claims(token: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")))


async def attributes(ctx: ApiContext, device_id: str) -> dict[str, Any]:
    async with ctx.store.read() as conn:
        rows = await conn.execute(
            sa.select(tables.inventory.c.name, tables.inventory.c.value).where(
                tables.inventory.c.device_id == device_id, tables.inventory.c.scope == "inventory"
            )
        )
        return {r.name: r.value for r in rows}


async def transport_id(ctx: ApiContext, device_id: str) -> str | None:
    async with ctx.store.read() as conn:
        query = sa.select(tables.devices.c.transport_id).where(tables.devices.c.id == device_id)
        return (await conn.execute(query)).scalar_one()  # type: ignore[no-any-return]


def error_of(r: ResponseEnvelope) -> str:
    return str(json.loads(r.body)["error"])


def test_token_is_bound_to_the_stamped_identity(db: Db, tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        adapter = MqttApiAdapter(router, BridgePolicy())
        a = Node(adapter, "node-a", "02:00:00:00:2a:01")
        b = Node(adapter, "node-b", "02:00:00:00:2a:02")
        id_a, token_a = await enrolled(ctx, a)
        id_b, token_b = await enrolled(ctx, b)
        assert claims(token_a)["meshota.tid"] == "node-a" and claims(token_a)["sub"] == id_a
        assert await transport_id(ctx, id_a) == "node-a"
        # A's own token on A's session works
        own = await a.call("PATCH", INV, b'[{"name":"own","value":"1"}]', token_a)
        assert own.status == 200
        # A's token on B's session: 403, nothing written to A or B
        stolen = await b.call("PATCH", INV, b'[{"name":"evil","value":"1"}]', token_a)
        assert stolen.status == 403 and "transport identity" in error_of(stolen)
        assert await attributes(ctx, id_a) == {"own": "1"}
        assert await attributes(ctx, id_b) == {}
        provides = b'{"device_provides":{"device_type":"x","artifact_name":"v0"}}'
        nxt = await b.call("POST", "/api/devices/v2/deployments/device/deployments/next", provides, token_a)
        assert nxt.status == 403
        # B replays A's signed auth request on its own session: no token for A's device
        replay = await b.authenticate(a.auth)
        assert replay.status == 403 and "bound to another transport identity" in error_of(replay)
        assert await transport_id(ctx, id_a) == "node-a"
        # a token issued over HTTP (no identity: no meshota.tid claim) is not good over MQTT
        http_auth = Request("POST", AUTH, body=a.auth[0], headers={"x-men-signature": a.auth[1]})
        http_token = (await router.handle(http_auth)).body.decode()
        assert "meshota.tid" not in claims(http_token)
        assert (await a.call("PATCH", INV, b'[{"name":"h","value":"1"}]', http_token)).status == 403
        # ... while every token keeps working over HTTP (no transport identity there)
        for token in (token_a, http_token):
            over_http = Request("PATCH", INV, headers={"authorization": f"Bearer {token}"},
                                body=b'[{"name":"http","value":"1"}]')  # fmt: skip
            assert (await router.handle(over_http)).status == 200
        assert (await b.call("PATCH", INV, b'[{"name":"mine","value":"b"}]', token_b)).status == 200
        assert await attributes(ctx, id_b) == {"mine": "b"}

    run(db, tmp_path, scenario)


def test_one_identity_one_device_and_id_data_rule(db: Db, tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        adapter = MqttApiAdapter(router, BridgePolicy())
        c = Node(adapter, "node-c", "02:00:00:00:2c:01")
        id_c, _ = await enrolled(ctx, c)
        # the same stamp presenting a second Mender identity: refused, no device created
        other = Node(adapter, "node-c", "02:00:00:00:2c:02")
        r = await other.authenticate()
        assert r.status == 403 and "bound to another device" in error_of(r)
        async with ctx.store.read() as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(tables.devices))).scalar()
        assert count == 1
        # decommissioning the device frees the identity
        async with ctx.store.transaction() as conn:
            await conn.execute(sa.delete(tables.devices).where(tables.devices.c.id == id_c))
        assert (await other.authenticate()).status == 401  # now pending, bound to node-c
        # id_data naming a transport identity must name the stamped one
        d = Node(adapter, "node-d", "02:00:00:00:2d:01")
        named = json.dumps({"mac": d.mac, "meshota_id": "node-x"})
        body = json.dumps({"id_data": named, "pubkey": json.loads(d.auth[0])["pubkey"]}).encode()
        forged = await d.call("POST", AUTH, body, headers={"x-men-signature": "AAAA"})
        assert forged.status == 401  # the signature is checked first
        key = device_key("ed25519")
        pub = json.loads(auth_body(key, d.mac)[0])["pubkey"]
        body = json.dumps({"id_data": named, "pubkey": pub}).encode()
        sig = base64.b64encode(key.sign(body)).decode()
        r = await d.call("POST", AUTH, body, headers={"x-men-signature": sig})
        assert r.status == 403 and "id_data names another transport identity" in error_of(r)
        good = json.dumps({"id_data": json.dumps({"mac": d.mac, "meshota_id": "node-d"}), "pubkey": pub})
        sig = base64.b64encode(key.sign(good.encode())).decode()
        assert (await d.call("POST", AUTH, good.encode(), headers={"x-men-signature": sig})).status == 401

    run(db, tmp_path, scenario)


def test_unverified_stamps_refused_unless_accepted(db: Db, tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        strict = Node(MqttApiAdapter(router, BridgePolicy()), "udp-node", "02:00:00:00:2e:01", verified=False)
        r = await strict.authenticate()
        assert r.status == 403 and "not verified" in error_of(r)
        async with ctx.store.read() as conn:
            assert (await conn.execute(sa.select(tables.devices.c.id))).first() is None  # nothing stored
        lax = MqttApiAdapter(router, BridgePolicy(require_verified=False))  # --accept-unverified
        node = Node(lax, "udp-node", "02:00:00:00:2e:01", verified=False)
        node.auth = strict.auth
        device_id, token = await enrolled(ctx, node)
        assert claims(token)["meshota.tid"] == "udp-node"
        assert (await node.call("PATCH", INV, b'[{"name":"u","value":"1"}]', token)).status == 200
        # the strict policy still refuses that session, token or not
        strict_again = await strict.call("PATCH", INV, b'[{"name":"u","value":"2"}]', token)
        assert strict_again.status == 403
        assert await attributes(ctx, device_id) == {"u": "1"}

    run(db, tmp_path, scenario)


@pytest.mark.integration
def test_token_of_a_on_b_connection_through_mosquitto(tmp_path: Path) -> None:
    broker = start_test_mosquitto(tmp_path / "mosquitto")
    server = start_bridge_server(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, broker.port)
    caller = StampingCaller(broker.port)
    try:

        async def add() -> None:
            async with server.context.store.transaction() as conn:
                await create_user(conn, *ADMIN)

        server.run_coroutine(add())
        admin = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}) as mgmt:
            tokens: dict[str, str] = {}
            ids: dict[str, str] = {}
            for i, node in enumerate(("node-a", "node-b")):
                body, sig = auth_body(device_key("ecdsa"), f"02:00:00:00:2f:{i:02x}")
                hdr = {"x-men-signature": sig}
                assert caller.call(node, "POST", AUTH, body=body, headers=hdr).status == 401
                pending = next(d for d in mgmt.get("/api/management/v2/devauth/devices").json()
                               if d["status"] == "pending")  # fmt: skip
                ids[node] = accept(mgmt, pending["id"])
                r = caller.call(node, "POST", AUTH, body=body, headers=hdr)
                assert r.status == 200
                tokens[node] = r.body.decode()
            own = caller.call(
                "node-a", "PATCH", INV, body=b'[{"name":"a","value":"1"}]', token=tokens["node-a"]
            )
            assert own.status == 200
            stolen = caller.call(
                "node-b", "PATCH", INV, body=b'[{"name":"evil","value":"1"}]', token=tokens["node-a"]
            )
            assert stolen.status == 403
            for node, expected in (("node-a", {"a": "1"}), ("node-b", {})):
                inv = mgmt.get(f"/api/management/v1/inventory/devices/{ids[node]}").json()
                got = {a["name"]: a["value"] for a in inv["attributes"] if a.get("scope") == "inventory"}
                assert got == expected
    finally:
        caller.close()
        server.stop()
        broker.stop()
