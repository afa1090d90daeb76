"""DTLS end to end over real UDP loopback: node (DtlsUdpClient) → relay (RelayUdp) → gateway
(DtlsListener + Gateway) → REAL mosquitto → paho, and back; PSK and certificates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.gateway.dtls_listener import DtlsPeer
from bridge.gateway.dtls_server import SessionClosed as ServerSessionClosed
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.mqttsn_udp import ConnectionLostError, UdpClient
from firmware_proto.dtls_client import ClientConfig, SessionClosed
from mqttsn import BrokerConnect, BrokerPublish, ForwardedPeer, Will
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import (
    KEYS,
    TamperingRelay,
    Watcher,
    dtls_gateway,
    make_pki,
    next_message,
    psk,
)

pytestmark = pytest.mark.integration


async def round_trip(
    mosquitto: Mosquitto, gw_addr: tuple[str, int], device: str, dtls: ClientConfig, tag: str
) -> tuple[list[bytes], TamperingRelay]:
    """Node behind a relay publishes a marker to paho and receives one from paho."""
    relay = TamperingRelay(gw_addr)
    handled: list[bytes] = []
    relay.core.tap = handled.append
    await relay.start()
    watcher = Watcher(mosquitto, f"dev/{device}/#")
    up, down = f"UPLINK-{tag}-7f3a".encode(), f"DOWNLINK-{tag}-c41d".encode()
    try:
        async with DtlsUdpClient(relay.listen_address, device, dtls=dtls) as node:
            await node.subscribe(f"fw/{device}/#", qos=1)
            await node.publish(f"dev/{device}/status", up, qos=1)
            got = await watcher.wait_for(1)
            assert got == [(f"dev/{device}/status", up, 1)]
            watcher.publish(f"fw/{device}/cmd", down, qos=1)
            msg = await next_message(node.messages)
            assert (msg.topic, msg.payload) == (f"fw/{device}/cmd", down)
            # Transparent mode: the node's MQTT connection at the broker carries the verified
            # device id as its client id — an MQTT client taking that id over cuts the node off.
            usurper = Watcher(mosquitto, client_id=device)
            try:
                with pytest.raises(ConnectionLostError, match="DISCONNECT"):
                    await next_message(node.messages)
            finally:
                usurper.close()
    finally:
        watcher.close()
        relay.close()
    # The relay held no key: no marker ever appears in a byte it handled, either direction. (The
    # device id itself is not secret: DTLS 1.2 sends the PSK identity / certificate in clear.)
    joined = b"".join(handled)
    assert len(joined) > 1000 and relay.core.forwarded_down > 3
    for marker in (up, down, f"fw/{device}".encode(), f"dev/{device}/status".encode()):
        assert marker not in joined, marker
    return handled, relay


def test_psk_node_through_relay_to_mosquitto_and_back(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with dtls_gateway(mosquitto, psk_keys=KEYS, udp=True) as gw:
            await round_trip(mosquitto, gw.listener.address, "node-a", psk("node-a"), "psk")
            # a plain-UDP client shares the process, the Gateway and the BrokerLink
            watcher = Watcher(mosquitto, "dev/plain-1/#")
            try:
                async with UdpClient(gw.server.address, "plain-1") as plain:
                    await plain.publish("dev/plain-1/status", b"plain", qos=1)
                    assert await watcher.wait_for(1) == [("dev/plain-1/status", b"plain", 1)]
            finally:
                watcher.close()
            connects = [a for a in gw.actions if isinstance(a, BrokerConnect)]
            assert [(c.client_id, c.identity) for c in connects] == [("node-a", "node-a"), ("plain-1", None)]
            (secure,) = [c for c in connects if c.identity]
            assert isinstance(secure.conn, DtlsPeer) and isinstance(secure.conn.link, ForwardedPeer)
            stamped = [a for a in gw.actions if isinstance(a, BrokerPublish) and a.conn == secure.conn]
            assert stamped and all(getattr(a, "device", "node-a") == "node-a" for a in stamped)

    asyncio.run(main())


def test_certificate_node_through_relay_and_direct(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with dtls_gateway(mosquitto, certificate=pki.credentials()) as gw:
            await round_trip(mosquitto, gw.listener.address, "node-x1", pki.configs["node-x1"], "x509")
            async with DtlsUdpClient(gw.listener.address, "node-x2", dtls=pki.configs["node-x2"]) as node:
                await node.ping()
            ids = [(a.client_id, a.identity) for a in gw.actions if isinstance(a, BrokerConnect)]
            assert ids == [("node-x1", "node-x1"), ("node-x2", "node-x2")]
            direct = [e.peer for e in gw.dtls_events if type(e).__name__ == "SessionEstablished"][1]
            assert direct[0] == "127.0.0.1"  # keyed by the node's own UDP address

    asyncio.run(main())


def test_shutdown_sends_close_notify_to_every_node_live_or_parked(mosquitto: Mosquitto) -> None:
    """A stopping gateway tells each node at once (close_notify), also nodes behind a relay and
    nodes whose DTLS context was parked; no will is published (the nodes are not lost)."""

    async def main() -> None:
        watcher = Watcher(mosquitto, "will/#")
        try:
            async with dtls_gateway(mosquitto, psk_keys=KEYS, live_contexts=1) as gw:
                relay = TamperingRelay(gw.listener.address)
                await relay.start()
                try:
                    a = DtlsUdpClient(gw.listener.address, "node-a", dtls=psk("node-a"))
                    b = DtlsUdpClient(relay.listen_address, "node-b", dtls=psk("node-b"),
                                      will=Will("will/node-b", b"gone", 1))  # fmt: skip
                    async with a, b:
                        await a.publish("dev/node-a/up", b"1", qos=1)
                        await b.publish("dev/node-b/up", b"1", qos=1)
                        assert gw.dtls.stats["parked"] >= 1  # one context only: someone is parked
                        await gw.listener.close()
                        for client in (a, b):
                            async with asyncio.timeout(5):
                                while not any(isinstance(e, SessionClosed) for e in client.dtls_events):
                                    await asyncio.sleep(0.01)
                            (closed,) = [e for e in client.dtls_events if isinstance(e, SessionClosed)]
                            assert "close_notify" in closed.reason
                        closed_at_gateway = [e for e in gw.dtls_events if isinstance(e, ServerSessionClosed)]
                        assert sorted(e.device_id or "" for e in closed_at_gateway) == ["node-a", "node-b"]
                        assert gw.dtls.session_count == 0
                finally:
                    relay.close()
            await asyncio.sleep(0.3)
            assert watcher.messages == []  # no will: a planned shutdown loses no node
        finally:
            watcher.close()

    asyncio.run(main())
