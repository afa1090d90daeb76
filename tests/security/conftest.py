"""Shared rig of the security suite: a gateway with BOTH listeners (plain UDP and DTLS with PSK)
in front of a real mosquitto, run on an event loop of its own (a background thread), and a
verified DTLS node that must keep working while an attack runs.

Fixtures (generic; each attack file adds its own attacks):

* ``make_dual_gateway(**options)`` -> :class:`DualGateway`: start a rig with a custom
  :class:`mqttsn.GatewayConfig` (``config=``), PSK table (``keys=``) or DtlsServer keyword
  options (``dtls_options=``). Stopped at the end of the test.
* ``dual_gateway`` -> :class:`DualGateway` with the defaults (PSK table :data:`KEYS`).
* ``verified_node`` -> :class:`VerifiedNode`: ``node-a`` connected over DTLS to ``dual_gateway``,
  subscribed to its command topic; ``round_trip(tag)`` (await it from any event loop) or
  ``round_trip_sync(tag)`` checks publish -> broker and broker -> node end to end.

Attacks run from the test's own thread/event loop (plain sockets, ``UdpClient`` ...) while the
gateway keeps serving on its thread, so "the node keeps working while the attack runs" is a real
concurrent check. Read gateway state (``rig.server.gateway.stats``) only for assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.gateway.dtls_listener import DtlsListener
from bridge.gateway.dtls_server import DtlsServer
from bridge.gateway.udp import GatewayServer
from mqttsn import GatewayConfig
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import KEYS
from tests.support.security import DualGateway, DualGatewayFactory, Loop, VerifiedNode
from wire.dtls_credentials import DtlsServerConfig


@pytest.fixture
def make_dual_gateway(mosquitto: Mosquitto) -> Iterator[DualGatewayFactory]:
    started: list[DualGateway] = []

    def make(
        *,
        config: GatewayConfig | None = None,
        keys: dict[str, bytes] | None = None,
        dtls_options: dict[str, Any] | None = None,
    ) -> DualGateway:
        table = dict(KEYS if keys is None else keys)
        loop = Loop()

        async def start() -> tuple[GatewayServer, DtlsListener]:
            server = GatewayServer(
                config or GatewayConfig(), (mosquitto.host, mosquitto.port), ("127.0.0.1", 0)
            )
            dtls = DtlsServer(DtlsServerConfig(psk=table), **(dtls_options or {}))
            listener = DtlsListener(server, dtls, ("127.0.0.1", 0))
            await server.start()
            await listener.start()
            return server, listener

        try:
            server, listener = loop.submit(start()).result(30)
        except BaseException:
            loop.stop()
            raise
        rig = DualGateway(mosquitto, server, listener, table, loop)
        started.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in started:

            async def stop(r: DualGateway = rig) -> None:
                await r.listener.close()
                await r.server.close()

            try:
                rig.run(stop())
            finally:
                rig._loop.stop()


@pytest.fixture
def dual_gateway(make_dual_gateway: DualGatewayFactory) -> DualGateway:
    return make_dual_gateway()


@pytest.fixture
def verified_node(dual_gateway: DualGateway) -> Iterator[VerifiedNode]:
    node = VerifiedNode(dual_gateway)
    try:
        dual_gateway.run(node._start())
        node.round_trip_sync("setup")
        yield node
    finally:
        node.close()
