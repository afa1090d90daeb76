"""Keyless half-open DTLS flood against the real gateway (issue 12 item 3), real UDP on loopback.

One attacker host (127.0.0.2) answers every HelloVerifyRequest and never goes further: as a
"relay" wrapping each ClientHello under a fresh wireless node id (the attack that filled the
10,000-session table of e32c0c0 in ~9 s), and directly from a pool of ports. Meanwhile verified
nodes (127.0.0.1) keep publishing, a node that was connected reconnects, a node new to the
gateway joins, and a node behind a real relay joins: every one of them must work, with the
gateway's default limits.
"""

from __future__ import annotations

import asyncio
import threading

from bridge.gateway.dtls_admission import HandshakeLimits
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.relay_udp import RelayUdp
from tests.support.broker import Mosquitto
from tests.support.dtls_flood import UdpFlooder
from tests.support.gateway_dtls import KEYS, Watcher, dtls_gateway, psk


def test_verified_nodes_keep_working_while_a_keyless_half_open_flood_runs(mosquitto: Mosquitto) -> None:
    watcher = Watcher(mosquitto, "dev/#")

    async def main() -> None:
        async with dtls_gateway(mosquitto, psk_keys=KEYS) as gw:
            target = gw.listener.address
            async with DtlsUdpClient(target, "node-a", dtls=psk("node-a"), handshake_timeout=20) as a:
                await a.publish("dev/node-a/up", b"before", qos=1)
            a = DtlsUdpClient(target, "node-a", dtls=psk("node-a"), handshake_timeout=20)
            await a.__aenter__()  # node-a holds a session while the flood starts

            stop = threading.Event()
            floods = [
                UdpFlooder(target, bind="127.0.0.2", relay=True),
                UdpFlooder(target, bind="127.0.0.2", relay=False, ports=48),
            ]
            threads = [threading.Thread(target=f.run, args=(30.0, stop.is_set), daemon=True) for f in floods]
            for t in threads:
                t.start()
            try:
                async with asyncio.timeout(60):
                    while sum(f.stats["server_hello"] for f in floods) < 40:  # the flood is biting
                        await asyncio.sleep(0.05)
                for i in range(5):  # established: keeps publishing
                    await a.publish("dev/node-a/up", f"during {i}".encode(), qos=1)
                await a.__aexit__(None, None, None)
                async with DtlsUdpClient(target, "node-a", dtls=psk("node-a"), handshake_timeout=20) as again:
                    await again.publish("dev/node-a/up", b"returned", qos=1)  # it comes back
                async with DtlsUdpClient(target, "node-b", dtls=psk("node-b"), handshake_timeout=20) as b:
                    await b.publish("dev/node-b/up", b"new", qos=1)  # never connected before
                relay = RelayUdp(target, ("127.0.0.1", 0))
                await relay.start()
                try:
                    async with DtlsUdpClient(
                        relay.listen_address, "node-c", dtls=psk("node-c"), handshake_timeout=20
                    ) as c:
                        await c.publish("dev/node-c/up", b"relayed", qos=1)  # behind a relay
                finally:
                    relay.close()
                held = gw.dtls.handshake_count
            finally:
                stop.set()
                for t in threads:
                    await asyncio.to_thread(t.join, 10)
                for f in floods:
                    f.close()
            stats = gw.dtls.stats
            limits = HandshakeLimits()
            assert held <= limits.max_handshakes
            assert gw.dtls.admission.count(source="127.0.0.2") <= limits.per_source
            assert stats["rate_limited"] + stats["evicted"] > 0
            assert stats["established"] == 5 and stats["refused"] == 0
            assert sum(f.stats["hellos"] for f in floods) > 200

        messages = await watcher.wait_for(9, timeout=20)
        payloads = {(t, p) for t, p, _ in messages}
        expected = {
            ("dev/node-a/up", b"before"),
            ("dev/node-a/up", b"returned"),
            ("dev/node-b/up", b"new"),
            ("dev/node-c/up", b"relayed"),
        }
        expected |= {("dev/node-a/up", f"during {i}".encode()) for i in range(5)}
        assert expected <= payloads

    try:
        asyncio.run(main())
    finally:
        watcher.close()
