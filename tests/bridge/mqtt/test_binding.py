"""Token <-> transport identity binding: a device can never act as another over MQTT.

Transport-free (the MQTT adapter on the real routing table, SQLite and PostgreSQL) for the
rules, and once through real mosquitto for "device A's token on device B's connection".
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.api import (
    ApiContext,
    ApiError,
    Request,
    Router,
    Settings,
    build_router,
    create_user,
    set_auth_status,
)
from bridge.artifacts import BlobStore
from bridge.mqtt import BridgePolicy, MqttApiAdapter, StampedIdentity
from bridge.store import DEFAULT_ORG_ID, Store, tables, tenant_scope
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
        # both ways: A's token (bound to node-a) over HTTP is refused with Mender's error body
        over_http = Request("PATCH", INV, headers={"authorization": f"Bearer {token_a}"},
                            body=b'[{"name":"http","value":"1"}]')  # fmt: skip
        refused = await router.handle(over_http)
        assert refused.status == 401 and set(json.loads(refused.body)) == {"error", "request_id"}
        assert "bound to a transport identity" in json.loads(refused.body)["error"]
        assert await attributes(ctx, id_a) == {"own": "1"}
        # A's own key over HTTP gets a token without the claim (good over HTTP, never over MQTT)
        http_auth = Request("POST", AUTH, body=a.auth[0], headers={"x-men-signature": a.auth[1]})
        a_http_token = (await router.handle(http_auth)).body.decode()
        assert "meshota.tid" not in claims(a_http_token) and claims(a_http_token)["sub"] == id_a
        assert (await a.call("PATCH", INV, b'[{"name":"h","value":"1"}]', a_http_token)).status == 403
        # a token issued over HTTP (a device never bound: no meshota.tid claim) is good over HTTP
        # only: refused on any stamp, even one equal to its Mender device id (the token's sub)
        h_key = device_key("ed25519")
        h_body, h_sig = auth_body(h_key, "02:00:00:00:2a:03")
        http_auth = Request("POST", AUTH, body=h_body, headers={"x-men-signature": h_sig})
        assert (await router.handle(http_auth)).status == 401
        id_h = await accept_mac(ctx, "02:00:00:00:2a:03")
        http_token = (await router.handle(http_auth)).body.decode()
        assert "meshota.tid" not in claims(http_token) and claims(http_token)["sub"] == id_h
        assert (await a.call("PATCH", INV, b'[{"name":"h","value":"1"}]', http_token)).status == 403
        as_sub = Node(adapter, id_h, "02:00:00:00:2a:03")
        assert (await as_sub.call("PATCH", INV, b'[{"name":"h","value":"1"}]', http_token)).status == 403
        over_http = Request("PATCH", INV, headers={"authorization": f"Bearer {http_token}"},
                            body=b'[{"name":"http","value":"1"}]')  # fmt: skip
        assert (await router.handle(over_http)).status == 200
        assert await attributes(ctx, id_h) == {"http": "1"}
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
        assert (await other.authenticate()).status == 401  # now pending (bound once accepted)
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


async def accept_presented_by(ctx: ApiContext, stamp: str) -> str:
    """The operator accepts the auth set that ``stamp`` presented (the management API shows it)."""
    async with ctx.store.transaction() as conn:
        query = sa.select(tables.auth_sets.c.device_id, tables.auth_sets.c.id).where(
            tables.auth_sets.c.transport_id == stamp
        )
        device_id, aid = (await conn.execute(query)).one()
        await set_auth_status(conn, str(device_id), str(aid), "accepted")
    return str(device_id)


def test_first_use_squatting_cannot_lock_the_victim_out(db: Db, tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        adapter = MqttApiAdapter(router, BridgePolicy())
        victim = Node(adapter, "node-v", "02:00:00:00:30:01")
        # a verified node claims the victim's id_data with its own key before the victim's first auth
        squatter = Node(adapter, "node-s", victim.mac)
        assert (await squatter.authenticate()).status == 401  # pending: its own auth set only
        r = await victim.authenticate()
        assert r.status == 401 and "pending" in error_of(r)  # not "bound to another transport identity"
        # one device, two auth sets, each showing the identity that presented its key
        listing = Request("GET", "/api/management/v2/devauth/devices",
                          headers={"authorization": f"Bearer {await admin_token(ctx, router)}"})  # fmt: skip
        (device,) = json.loads((await router.handle(listing)).body)
        assert sorted(a["meshota_transport_id"] for a in device["auth_sets"]) == ["node-s", "node-v"]
        assert await transport_id(ctx, device["id"]) is None  # nothing bound by who asked first
        # the operator accepts the victim's key: the binding comes from the identity that presented it
        assert await accept_presented_by(ctx, "node-v") == device["id"]
        assert await transport_id(ctx, device["id"]) == "node-v"
        r = await victim.authenticate()
        assert r.status == 200 and claims(r.body.decode())["meshota.tid"] == "node-v"
        token = r.body.decode()
        assert (await victim.call("PATCH", INV, b'[{"name":"v","value":"1"}]', token)).status == 200
        # the squatter gets nothing for that device: its own key, or the victim's replayed request
        r = await squatter.authenticate()
        assert r.status == 403 and "bound to another transport identity" in error_of(r)
        r = await squatter.authenticate(victim.auth)
        assert r.status == 403 and "bound to another transport identity" in error_of(r)
        assert (await squatter.call("PATCH", INV, b'[{"name":"s","value":"1"}]', token)).status == 403
        assert await attributes(ctx, device["id"]) == {"v": "1"}
        # the squatter's own identity is not bound by the attempt: it still enrolls its own device
        own = Node(adapter, "node-s", "02:00:00:00:30:02")
        own_id, own_token = await enrolled(ctx, own)
        assert own_id != device["id"] and claims(own_token)["meshota.tid"] == "node-s"

    run(db, tmp_path, scenario)


_examples = itertools.count()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(["squat", "victim", "replay", "accept"]), max_size=8))
def test_no_order_of_claims_locks_the_victim_out(db: Db, tmp_path: Path, steps: list[str]) -> None:
    """Whatever order a squatter's claims (its own key, or the victim's replayed request), the
    victim's requests and the operator's acceptance of the victim's key come in: the squatter never
    gets a token, nothing binds before acceptance, and the victim is served once accepted."""
    n = next(_examples)
    stamp_v, stamp_s, mac = f"victim-{n}", f"squatter-{n}", f"02:00:00:01:{n >> 8:02x}:{n & 255:02x}"

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        adapter = MqttApiAdapter(router, BridgePolicy())
        victim, squatter = Node(adapter, stamp_v, mac), Node(adapter, stamp_s, mac)
        asked = accepted = False
        for step in [*steps, "victim", "accept"]:
            if step == "squat":
                assert (await squatter.authenticate()).status in (401, 403)
            elif step == "replay":  # only what the victim has sent can be replayed
                if asked:
                    assert (await squatter.authenticate(victim.auth)).status == 403
            elif step == "victim":
                r = await victim.authenticate()
                asked = True
                assert r.status == (200 if accepted else 401), r.body
            elif asked and not accepted:
                device_id = await accept_presented_by(ctx, stamp_v)
                accepted = True
                assert await transport_id(ctx, device_id) == stamp_v
            async with ctx.store.read() as conn:
                query = sa.select(tables.devices.c.transport_id).where(tables.devices.c.id_data.contains(mac))
                bound = set((await conn.execute(query)).scalars())
            assert bound <= ({stamp_v} if accepted else {None})  # at most the one device, bound only so
        r = await victim.authenticate()
        assert r.status == 200 and claims(r.body.decode())["meshota.tid"] == stamp_v

    run(db, tmp_path, scenario)


def test_replayed_auth_request_before_acceptance_gets_nothing(db: Db, tmp_path: Path) -> None:
    """The first identity that presented a key keeps it: a replay over another stamp is refused,
    before and after the operator's acceptance, and does not change what acceptance binds."""

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        adapter = MqttApiAdapter(router, BridgePolicy())
        victim = Node(adapter, "node-w", "02:00:00:00:31:01")
        thief = Node(adapter, "node-t", "02:00:00:00:31:02")
        assert (await victim.authenticate()).status == 401
        r = await thief.authenticate(victim.auth)
        assert r.status == 403 and "presented over another transport identity" in error_of(r)
        device_id = await accept_mac(ctx, victim.mac)
        assert await transport_id(ctx, device_id) == "node-w"
        r = await thief.authenticate(victim.auth)
        assert r.status == 403
        assert (await victim.authenticate()).status == 200

    run(db, tmp_path, scenario)


def test_acceptance_binds_one_identity_to_one_device(db: Db, tmp_path: Path) -> None:
    """A stamp that presented keys for two devices while both were pending: accepting the first
    binds it; accepting the second is refused (409) and changes nothing."""

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        adapter = MqttApiAdapter(router, BridgePolicy())
        first = Node(adapter, "node-e", "02:00:00:00:33:01")
        second = Node(adapter, "node-e", "02:00:00:00:33:02")
        assert (await first.authenticate()).status == 401
        assert (await second.authenticate()).status == 401
        id_first = await accept_mac(ctx, first.mac)
        assert await transport_id(ctx, id_first) == "node-e"
        with pytest.raises(ApiError) as refused:
            await accept_mac(ctx, second.mac)
        assert refused.value.status == 409 and "bound to another device" in refused.value.message
        async with ctx.store.read() as conn:
            query = sa.select(tables.devices.c.status, tables.devices.c.transport_id).where(
                tables.devices.c.id_data.contains(second.mac)
            )
            assert tuple((await conn.execute(query)).one()) == ("pending", None)
        r = await second.authenticate()
        assert r.status == 403 and "bound to another device" in error_of(r)
        assert (await first.authenticate()).status == 200

    run(db, tmp_path, scenario)


async def admin_token(ctx: ApiContext, router: Router[ApiContext]) -> str:
    with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
        async with ctx.store.transaction() as conn:
            await create_user(conn, *ADMIN)
    basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    login = Request(
        "POST", "/api/management/v1/useradm/auth/login", headers={"authorization": f"Basic {basic}"}
    )
    return (await router.handle(login)).body.decode()


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
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
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


@pytest.mark.integration
def test_squatting_and_http_refusal_through_mosquitto(tmp_path: Path) -> None:
    """Through real mosquitto and the real HTTP server: a squatter's first claim on the victim's
    id_data does not lock the victim out, and the victim's MQTT-bound token is refused over HTTP."""
    broker = start_test_mosquitto(tmp_path / "mosquitto")
    server = start_bridge_server(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, broker.port)
    caller = StampingCaller(broker.port)
    try:

        async def add() -> None:
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
                async with server.context.store.transaction() as conn:
                    await create_user(conn, *ADMIN)

        server.run_coroutine(add())
        admin = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
        mac = "02:00:00:00:32:01"
        squat_body, squat_sig = auth_body(device_key("ecdsa"), mac)
        body, sig = auth_body(device_key("ecdsa"), mac)
        squat_hdr, hdr = {"x-men-signature": squat_sig}, {"x-men-signature": sig}
        assert caller.call("node-s", "POST", AUTH, body=squat_body, headers=squat_hdr).status == 401
        assert caller.call("node-v", "POST", AUTH, body=body, headers=hdr).status == 401
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}) as mgmt:
            (dev,) = mgmt.get("/api/management/v2/devauth/devices").json()
            aid = next(a["id"] for a in dev["auth_sets"] if a.get("meshota_transport_id") == "node-v")
            r = mgmt.put(f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
                         json={"status": "accepted"})  # fmt: skip
            assert r.status_code == 204, r.text
        r = caller.call("node-v", "POST", AUTH, body=body, headers=hdr)
        assert r.status == 200
        token = r.body.decode()
        assert caller.call("node-s", "POST", AUTH, body=squat_body, headers=squat_hdr).status == 403
        own = caller.call("node-v", "PATCH", INV, body=b'[{"name":"v","value":"1"}]', token=token)
        assert own.status == 200
        # the same token over HTTP: 401 with Mender's error body, nothing written
        over_http = httpx.patch(f"{server.url}{INV}", content=b'[{"name":"h","value":"1"}]',
                                headers={"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"})  # fmt: skip
        assert over_http.status_code == 401
        assert set(over_http.json()) == {"error", "request_id"}
        assert "transport identity" in over_http.json()["error"]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}) as mgmt:
            inv = mgmt.get(f"/api/management/v1/inventory/devices/{dev['id']}").json()
        got = {a["name"]: a["value"] for a in inv["attributes"] if a.get("scope") == "inventory"}
        assert got == {"v": "1"}
    finally:
        caller.close()
        server.stop()
        broker.stop()
