"""The gateway on a multicast group (loopback): ADVERTISE reaches listeners of the group, a
SEARCHGW multicast to the group is answered with GWINFO from the gateway's unicast address, and
a client that found it that way connects there."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from bridge.gateway.udp import GatewayServer, MulticastError
from firmware_proto.aio.mqttsn_udp import UdpClient
from mqttsn import Advertise, GatewayConfig, GwInfo, SearchGw, decode, encode
from tests.support.broker import Mosquitto, free_port

LO = "127.0.0.1"


def _group() -> tuple[str, int]:
    return f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}", free_port(socket.SOCK_DGRAM)


def _member(group: tuple[str, int]) -> socket.socket:
    """A node's socket: hears the group on lo and sends to it from its own unicast port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(group)
    s.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        struct.pack("4s4s", socket.inet_aton(group[0]), socket.inet_aton(LO)),
    )
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LO))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.setblocking(False)
    return s


async def _recv(sock: socket.socket, want: type, timeout: float = 5.0) -> tuple[object, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            data, addr = await loop.sock_recvfrom(sock, 2048)
            packet = decode(data)
            if isinstance(packet, want):
                return packet, addr


def test_advertise_and_searchgw_on_the_group(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        group = _group()
        listener = _member(group)
        asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # unicast reply comes here
        asker.bind((LO, 0))
        asker.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LO))
        asker.setblocking(False)
        config = GatewayConfig(gw_id=42, advertise_interval=0.5)
        server = GatewayServer(config, (mosquitto.host, mosquitto.port), (LO, 0), multicast=group)
        await server.start()
        try:
            adv, adv_from = await _recv(listener, Advertise)
            assert isinstance(adv, Advertise) and adv.gw_id == 42 and adv_from == server.address
            asker.sendto(encode(SearchGw(radius=1)), group)  # multicast, not to the gateway's port
            info, info_from = await _recv(asker, GwInfo)
            assert isinstance(info, GwInfo) and info.gw_id == 42 and info_from == server.address
            async with UdpClient(info_from, "found-by-search") as client:  # the address it learned
                await client.publish("dev/found/up", b"1", qos=1)
        finally:
            await server.close()
            listener.close()
            asker.close()

    asyncio.run(main())


def test_bad_multicast_group_is_refused(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        server = GatewayServer(
            GatewayConfig(),
            (mosquitto.host, mosquitto.port),
            (LO, 0),
            multicast=(LO, free_port(socket.SOCK_DGRAM)),
        )  # 127.0.0.1 is not a multicast group
        with pytest.raises(MulticastError, match=r"127\.0\.0\.1"):
            await server.start()

    asyncio.run(main())
