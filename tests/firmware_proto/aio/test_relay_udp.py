"""The relay over real UDP loopback: node (DtlsClient) → relay → gateway (DtlsServer). The
``meshota relay`` command line: tests/meshota/test_relay_cli.py."""

from __future__ import annotations

import asyncio

import pytest

from bridge.gateway.dtls_server import ApplicationData, DtlsServer, SessionEstablished
from firmware_proto import dtls_client as dc
from firmware_proto.aio.relay_udp import RelayUdp
from tests.support.dtls_udp import EchoDtlsGateway, UdpDtlsClient
from wire.dtls_credentials import DtlsServerConfig

KEY = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")


@pytest.mark.integration
def test_node_to_gateway_through_udp_relay_sees_no_plaintext() -> None:
    async def scenario() -> tuple[list[bytes], EchoDtlsGateway, list[object]]:
        gateway = EchoDtlsGateway(DtlsServer(DtlsServerConfig(psk={"node-udp": KEY})))
        gw_addr = await gateway.start()
        relay = RelayUdp(gw_addr, ("127.0.0.1", 0))
        seen: list[bytes] = []
        relay.core.tap = seen.append
        await relay.start()
        node = UdpDtlsClient(dc.DtlsClient(dc.PskClientConfig("node-udp", KEY)), relay.listen_address)
        try:
            await node.start()
            await node.wait_for(dc.SessionEstablished)
            node.send(b"PUBLISH-MARKER-91c2")
            reply = await node.wait_for(dc.ApplicationData)
            assert reply.plaintext == b"echo:PUBLISH-MARKER-91c2"
        finally:
            node.close()
            relay.close()
            gateway.close()
        return seen, gateway, node.events  # type: ignore[return-value]

    seen, gateway, _ = asyncio.run(scenario())
    (est,) = [e for e in gateway.events if isinstance(e, SessionEstablished)]
    _relay_host, node_id = est.peer  # type: ignore[misc]
    assert len(node_id) == 6 and est.device_id == "node-udp"  # (relay address, wireless node id)
    assert [e.plaintext for e in gateway.events if isinstance(e, ApplicationData)] == [b"PUBLISH-MARKER-91c2"]
    handled = b"".join(seen)
    assert len(handled) > 500
    assert b"MARKER" not in handled and b"echo" not in handled
