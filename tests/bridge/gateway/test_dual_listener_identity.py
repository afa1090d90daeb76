"""One gateway with BOTH a plain UDP and a DTLS listener, on real mosquitto: a keyless UDP peer
can neither wake, resume nor replace a DTLS node's session, and a sleeper that wakes at a new UDP
address keeps its broker connection (PUBACKs and broker messages reach it there)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.mqttsn_udp import UdpClient
from mqttsn import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Puback,
    Publish,
    Regack,
    Register,
    ReturnCode,
    Suback,
    Subscribe,
    decode,
    encode,
)
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import KEYS, Watcher, dtls_gateway, next_message, psk

pytestmark = pytest.mark.integration


class RawPeer:
    """A keyless MQTT-SN peer on its own UDP socket (what an attacker or a moved node sends)."""

    def __init__(self, gateway: tuple[str, int]) -> None:
        self.gateway = gateway
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def send(self, pkt: Packet) -> None:
        self.sock.sendto(encode(pkt), self.gateway)

    async def receive(self, quiet: float = 0.5, limit: float = 5.0) -> list[Packet]:
        """Packets until ``quiet`` seconds pass without one (at most ``limit`` seconds)."""
        loop = asyncio.get_running_loop()
        got: list[Packet] = []
        end = loop.time() + limit
        while loop.time() < end:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), quiet)
            except TimeoutError:
                break
            got.append(decode(data))
        return got

    async def request(self, pkt: Packet) -> list[Packet]:
        self.send(pkt)
        return await self.receive()

    def close(self) -> None:
        self.sock.close()


def test_keyless_udp_peer_cannot_wake_resume_or_replace_a_dtls_node(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with dtls_gateway(mosquitto, psk_keys=KEYS, udp=True) as gw:
            feeder = Watcher(mosquitto)
            attacker = RawPeer(gw.server.address)
            try:
                async with DtlsUdpClient(gw.listener.address, "node-a", dtls=psk("node-a"),
                                         clean_session=False) as node:  # fmt: skip
                    await node.subscribe("fw/node-a/token", qos=1)
                    await node.sleep(120)
                    feeder.publish("fw/node-a/token", b"DEVICE-TOKEN-7f3a", qos=1)
                    await asyncio.sleep(0.3)
                    # PINGREQ(ClientId) over plain UDP: nothing buffered leaves, in clear or not
                    answers = await attacker.request(Pingreq("node-a"))
                    assert answers == [Disconnect()]
                    # CONNECT with the node's id over plain UDP, clean or not: refused
                    for clean in (True, False):
                        answers = await attacker.request(Connect("node-a", 60, clean_session=clean))
                        assert answers == [Connack(ReturnCode.NOT_SUPPORTED)]
                    # the node wakes and gets its token: its session was never touched
                    await node.wake()
                    msg = await next_message(node.messages)
                    assert msg.payload == b"DEVICE-TOKEN-7f3a"
                    await node.connect()
                    await node.ping()
                    # while it is awake and active, a keyless CONNECT still cannot take it over
                    answers = await attacker.request(Connect("node-a", 60))
                    assert answers == [Connack(ReturnCode.NOT_SUPPORTED)]
                    await node.publish("dev/node-a/status", b"still-mine", qos=1)
                # after the node's session ended its id stays closed to keyless peers
                answers = await attacker.request(Connect("node-a", 60))
                assert answers == [Connack(ReturnCode.NOT_SUPPORTED)]
            finally:
                attacker.close()
                feeder.close()

    asyncio.run(main())


def test_sleeper_woken_at_a_new_udp_address_gets_pubacks_and_broker_messages(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with dtls_gateway(mosquitto, psk_keys=KEYS, udp=True) as gw:
            watcher = Watcher(mosquitto, "up/#")
            first = RawPeer(gw.server.address)
            moved = RawPeer(gw.server.address)
            try:
                assert await first.request(Connect("roamer", 60, clean_session=False)) == [Connack()]
                (reg,) = await first.request(Register(0, 1, "up/roamer"))
                assert isinstance(reg, Regack) and reg.return_code == ReturnCode.ACCEPTED
                (sub,) = await first.request(Subscribe(2, "down/roamer", 1))
                assert isinstance(sub, Suback) and sub.return_code == ReturnCode.ACCEPTED
                assert await first.request(Disconnect(120)) == [Disconnect()]
                # the node wakes up at another address (new port: NAT rebinding, a reboot)
                assert await moved.request(Connect("roamer", 60, clean_session=False)) == [Connack()]
                answers = await moved.request(Publish(reg.topic_id, b"from-new-address", 1, 3))
                assert answers == [Puback(reg.topic_id, 3)]
                assert (await watcher.wait_for(1))[0][1] == b"from-new-address"
                await asyncio.get_running_loop().run_in_executor(
                    None, watcher.publish, "down/roamer", b"to-new-address", 1
                )
                got = await moved.receive(quiet=2.0)
                pubs = [p for p in got if isinstance(p, Publish)]
                assert [p.data for p in pubs] == [b"to-new-address"]
                assert await first.receive(quiet=0.2) == []  # nothing to the old address
            finally:
                first.close()
                moved.close()
                watcher.close()

    asyncio.run(main())


def test_plain_udp_client_still_works_beside_dtls(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with dtls_gateway(mosquitto, psk_keys=KEYS, udp=True) as gw:
            async with UdpClient(gw.server.address, "plain-7") as c:
                await c.publish("dev/plain-7/s", b"x", qos=1)

    asyncio.run(main())
