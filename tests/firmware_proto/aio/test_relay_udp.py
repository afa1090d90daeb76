"""The relay over real UDP loopback: node (DtlsClient) → relay → gateway (DtlsServer), and the
``meshota relay`` command line."""

from __future__ import annotations

import asyncio

import pytest

from bridge.gateway.dtls_server import ApplicationData, DtlsServer, SessionEstablished
from firmware_proto import dtls_client as dc
from firmware_proto.aio.relay_udp import RelayUdp, parse_udp_url, relay_main
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
    assert [e.plaintext for e in gateway.events if isinstance(e, ApplicationData)] == [
        b"PUBLISH-MARKER-91c2"
    ]
    handled = b"".join(seen)
    assert len(handled) > 500
    assert b"MARKER" not in handled and b"echo" not in handled


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--gateway", "tcp://127.0.0.1:1", "--listen", "udp://127.0.0.1:0"], "'tcp://127.0.0.1:1'"),
        (["--gateway", "udp://127.0.0.1:1", "--listen", "udp://127.0.0.1"], "'udp://127.0.0.1'"),
        (["--gateway", "udp://127.0.0.1:99999", "--listen", "udp://127.0.0.1:0"], "99999"),
        (["--gateway", "udp://127.0.0.1:1"], "--listen"),
        (["--gateway", "udp://127.0.0.1:1", "--listen", "udp://192.0.2.1:9"], "--listen"),
    ],
)
def test_relay_main_config_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(relay_main(argv))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and err.startswith("meshota relay:")


def test_parse_udp_url() -> None:
    assert parse_udp_url("udp://127.0.0.1:1884", "--x") == ("127.0.0.1", 1884)
    assert parse_udp_url("udp://[::1]:5", "--x") == ("::1", 5)
