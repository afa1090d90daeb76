"""What the DTLS gateway refuses — each with a clear log line and no effect on a live session —
and a handshake through a seeded lossy relay (cookie exchange included). Real UDP, real mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.gateway.dtls_server import HandshakeFailed, SessionEstablished
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.mqttsn_udp import ConnectFailed
from mqttsn import Encapsulated, encode
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import (
    KEYS,
    LogCapture,
    TamperingRelay,
    Watcher,
    dtls_gateway,
    make_pki,
    next_message,
    psk,
    seeded_loss,
)

pytestmark = pytest.mark.integration

FAST = {"handshake_timeout_min": 0.1, "handshake_timeout_max": 0.4, "handshake_timeout": 5.0}


def test_rejections_leave_a_live_session_alone(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def main(logs: LogCapture) -> None:
        async with dtls_gateway(
            mosquitto, psk_keys=KEYS, certificate=pki.credentials(), handshake_timeout=3.0
        ) as gw:
            relay = TamperingRelay(gw.listener.address)
            await relay.start()
            watcher = Watcher(mosquitto, "dev/#")
            live = DtlsUdpClient(relay.listen_address, "node-a", dtls=psk("node-a"), retry_interval=1.0)
            try:
                async with live:
                    await live.subscribe("fw/node-a/#", qos=1)

                    async def bad(device: str, dtls: object, needle: str) -> None:
                        with pytest.raises(ConnectFailed) as info:
                            async with DtlsUdpClient(relay.listen_address, device, dtls=dtls, **FAST):  # type: ignore[arg-type]
                                pass
                        assert needle in str(info.value), info.value

                    # 1. wrong PSK, 2. unknown identity, 3. certificate from another CA
                    await bad("node-b", psk("node-b", b"\x01" * 16), "DTLS handshake")
                    await bad("node-zz", psk("node-a").__class__("node-zz", b"\x02" * 16), "DTLS handshake")
                    await bad("node-x1", pki.rogue_config, "DTLS handshake")
                    # 4. MQTT-SN client id != DTLS identity: CONNECT answered with DISCONNECT
                    await bad("node-c", psk("node-b"), "DISCONNECT")

                    # 5. the relay alters a record, forges one, and replays one of node-a's
                    before = len(relay.uplink_log)
                    live.publish_nowait("dev/node-a/once", b"REPLAY-ME", qos=0)
                    await watcher.wait_for(1)
                    (node_a,) = [
                        e.peer
                        for e in gw.dtls_events
                        if isinstance(e, SessionEstablished) and e.device_id == "node-a"
                    ]
                    # REGISTER of the topic, then the PUBLISH: take the PUBLISH
                    *_, captured = [d for d in relay.uplink_log[before:] if d[3 : d[0]] == node_a.node_id]  # type: ignore[attr-defined]
                    assert captured[1] == 0xFE and captured[captured[0]] == 0x17  # application data
                    altered = bytearray(captured)
                    altered[-3] ^= 0x40
                    forged = captured[: captured[0] + 13] + bytes(len(captured) - captured[0] - 13)
                    for datagram in (bytes(altered), forged, captured, captured):
                        relay.send_to_gateway(datagram)
                    # a forged record under a node id the gateway never saw: dropped unread
                    stranger = encode(Encapsulated(b"\x99\x99", captured[captured[0] :]))
                    relay.send_to_gateway(stranger)
                    await _until(lambda: gw.dtls.stats["discarded"] >= 4 and gw.dtls.stats["dropped"] >= 1)

                    # node-a is untouched: both directions still work on the same session
                    await live.publish("dev/node-a/after", b"still-here", qos=1)
                    got = await watcher.wait_for(2)
                    watcher.publish("fw/node-a/cmd", b"back-too", qos=1)
                    msg = await next_message(live.messages)
                    assert msg.payload == b"back-too"
            finally:
                relay.close()
                watcher.close()
        # the replayed PUBLISH reached the broker exactly once
        assert [m for m in got if m[0] == "dev/node-a/once"] == [("dev/node-a/once", b"REPLAY-ME", 0)]
        assert ("dev/node-a/after", b"still-here", 1) in got
        established = [e.device_id for e in gw.dtls_events if isinstance(e, SessionEstablished)]
        assert established == ["node-a", "node-b"]  # the id-mismatch node did get DTLS
        failed = [e.reason for e in gw.dtls_events if isinstance(e, HandshakeFailed)]
        assert len(failed) == 3, failed

    with LogCapture() as logs:
        asyncio.run(main(logs))
    assert logs.matching("WARNING", "handshake with", "node-b"), logs.lines  # wrong key
    assert logs.matching("WARNING", "handshake with", "unknown PSK identity"), logs.lines
    assert logs.matching("WARNING", "handshake with", "certificate"), logs.lines
    assert logs.matching("WARNING", "refused packet", "client id 'node-c' != transport identity 'node-b'")
    assert logs.matching("WARNING", "discarded a record", "'node-a'", "authentication or the replay")


def test_handshake_and_publish_through_a_seeded_lossy_relay(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with dtls_gateway(
            mosquitto, psk_keys=KEYS, handshake_timeout_min=0.1, handshake_timeout_max=3.2
        ) as gw:
            lossy, counts = seeded_loss(0.25, seed=4)
            first: dict[str, bytes] = {}

            def tamper(direction: str, datagram: bytes) -> list[bytes]:
                first.setdefault(direction, datagram)
                return lossy(direction, datagram)

            relay = TamperingRelay(gw.listener.address, tamper)
            await relay.start()
            watcher = Watcher(mosquitto, "dev/#")
            try:
                async with DtlsUdpClient(
                    relay.listen_address,
                    "node-a",
                    dtls=psk("node-a"),
                    retry_interval=0.3,
                    max_retries=20,
                    handshake_timeout_min=0.1,
                    handshake_timeout_max=3.2,
                    handshake_timeout=20.0,
                ) as node:
                    await node.publish("dev/node-a/lossy", b"made-it", qos=1)
                    assert await watcher.wait_for(1) == [("dev/node-a/lossy", b"made-it", 1)]
            finally:
                relay.close()
                watcher.close()
        assert counts["lost"] >= 2, counts
        # Cookie exchange: the first answer to a cookieless ClientHello is a HelloVerifyRequest,
        # smaller than the ClientHello it answers; only then a session was created.
        hello, down = first["up"], first["down"]
        hvr = down[down[0] :]  # the gateway's answer arrives encapsulated
        assert hello[0] == 22 and hello[13] == 1
        assert hvr[0] == 22 and hvr[13] == 3 and len(hvr) < len(hello)
        assert gw.dtls.stats["hello_verify_sent"] >= 1 and gw.dtls.stats["established"] == 1

    asyncio.run(main())


async def _until(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)
