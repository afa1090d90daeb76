"""The whole server side for node tests over MQTT-SN, all real, on loopback:

mosquitto (ACL + passwords from ``meshota.broker_config``) ← server with the MQTT bridge (its own
thread/loop) ← gateway with a DTLS (PSK) listener ← a relay. Nodes talk to the relay.

``ServerSide`` is synchronous (started before ``asyncio.run``); ``gateway_side`` is an async
context manager in the test's loop. Every request the handlers see (HTTP or MQTT) is recorded in
``ServerSide.seen`` as (method, path, range header, request id).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge.api import Request, Response, Router, Settings, create_user
from bridge.gateway.dtls_listener import DtlsListener
from bridge.gateway.dtls_server import DtlsServer
from bridge.gateway.udp import GatewayServer
from bridge.http import BackgroundServer, ServerConfig
from bridge.mqtt import BridgePolicy, MqttBridgeConfig, bridge_service, load_record_keys
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from firmware_proto.aio.relay_udp import RelayUdp
from meshota.broker import MosquittoProcess
from meshota.broker_config import BrokerUsers, write_broker_config
from mqttsn import GatewayConfig
from tests.support.broker import free_port, start_test_mosquitto
from wire.dtls_credentials import DtlsServerConfig

ADMIN = ("admin@example.com", "secret123")


@dataclass
class ServerSide:
    broker: MosquittoProcess
    server: BackgroundServer
    mgmt: httpx.Client
    url: str
    gateway_user: str
    gateway_password: str
    seen: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    creds: dict[str, str] = field(default_factory=dict)  # every broker user's password

    def accept_pending(self) -> list[str]:
        """Accept every pending device; their Mender ids."""
        ids = []
        for dev in self.mgmt.get("/api/management/v2/devauth/devices", params={"per_page": 500}).json():
            if dev["status"] != "pending":
                continue
            aid = dev["auth_sets"][-1]["id"]
            r = self.mgmt.put(
                f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status",
                json={"status": "accepted"},
            )
            assert r.status_code == 204, r.text
            ids.append(dev["id"])
        return ids

    def mender_ids(self) -> dict[str, str]:
        """mac -> Mender device id."""
        listing = self.mgmt.get("/api/management/v2/devauth/devices", params={"per_page": 500}).json()
        return {d["identity_data"]["mac"]: d["id"] for d in listing}

    def downloads(self) -> list[tuple[str, str | None]]:
        return [(p, r) for m, p, r, _ in self.seen if "/download/artifacts/" in p]


def _recording(service: Any, seen: list[tuple[str, str, str | None, str | None]]) -> Any:
    async def start(router: Router[Any]) -> Any:
        original = router.handle

        async def handle(request: Request) -> Response:
            seen.append((request.method, request.path, request.headers.get("range"), request.request_id))
            return await original(request)

        router.handle = handle  # type: ignore[method-assign]
        return await service(router)

    return start


@contextmanager
def server_side(
    tmp: Path,
    psks: dict[str, bytes],
    *,
    block_size: int = 512,
    public_stats: bool = False,
    tenants: tuple[str, ...] = (),
) -> Iterator[ServerSide]:
    """``tenants``: organisation ids with broker users of their own (meshota broker-config --tenant)."""
    users = BrokerUsers()
    creds = write_broker_config(tmp / "broker", tenants=tenants)
    # mosquitto started as root drops to user "mosquitto", which cannot read a 0600 file in tmp
    conf = (tmp / "broker" / "meshota.conf").read_text() + ("user root\n" if os.geteuid() == 0 else "")
    broker = start_test_mosquitto(tmp / "mosquitto", extra_conf=conf)
    seen: list[tuple[str, str, str | None, str | None]] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bridge = MqttBridgeConfig(
        "127.0.0.1",
        broker.port,
        username=users.bridge,
        password=creds[users.bridge],
        policy=BridgePolicy(require_verified=True, block_size=block_size),
    )
    server = BackgroundServer(
        ServerConfig(
            db_url=f"sqlite:///{tmp / 'db.sqlite'}",
            artifacts_dir=tmp / "artifacts",
            port=port,
            settings=Settings(public_url=url, public_stats=public_stats),
            services=(_recording(bridge_service(bridge, load_record_keys(psks)), seen),),
        )
    ).start()
    try:

        async def add_admin() -> None:
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
                async with server.context.store.transaction() as conn:
                    await create_user(conn, *ADMIN)

        server.run_coroutine(add_admin())
        token = httpx.post(f"{url}/api/management/v1/useradm/auth/login", auth=ADMIN, timeout=30).text
        mgmt = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        try:
            yield ServerSide(broker, server, mgmt, url, users.gateway, creds[users.gateway], seen, creds)
        finally:
            mgmt.close()
    finally:
        server.stop()
        broker.stop()


@dataclass
class GatewaySide:
    gateway: GatewayServer
    listener: DtlsListener
    relay: RelayUdp

    @property
    def relay_address(self) -> tuple[str, int]:
        return self.relay.listen_address


@asynccontextmanager
async def gateway_side(
    side: ServerSide,
    psks: dict[str, bytes],
    config: GatewayConfig | None = None,
    *,
    tenants: dict[str, str] | None = None,
) -> AsyncIterator[GatewaySide]:
    """The real gateway (transparent mode, the gateway's broker credentials), a DTLS PSK listener
    and a relay in front of it. ``tenants``: identity -> organisation id (the PSK file's third
    column); those nodes log in with their organisation's password from ``side.creds``."""
    gateway = GatewayServer(
        config or GatewayConfig(),
        (side.broker.host, side.broker.port),
        None,
        broker_username=side.gateway_user,
        broker_password=side.gateway_password,
        tenant_of=tenants.get if tenants is not None else None,
        tenant_passwords={t: side.creds[t] for t in (tenants or {}).values() if t in side.creds},
    )
    listener = DtlsListener(gateway, DtlsServer(DtlsServerConfig(psk=psks)), ("127.0.0.1", 0))
    await gateway.start()
    await listener.start()
    relay = RelayUdp(listener.address, ("127.0.0.1", 0))
    await relay.start()
    try:
        yield GatewaySide(gateway, listener, relay)
    finally:
        relay.close()
        await listener.close()
        await gateway.close()
