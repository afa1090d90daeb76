"""The gateway against a REAL mosquitto (started per test on a free loopback port), driven by our
asyncio MQTT-SN client and watched by a paho MQTT client.

Each test also covers a place where the reference gateway (Paho MQTT-SN 1.5.1) is known to fail,
see shared/reference/mqttsn.md §1.6.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import paho.mqtt.client as mqtt
import pytest

from bridge.gateway.udp import GatewayServer
from firmware_proto.aio.mqttsn_udp import RequestRefused, UdpClient
from mqttsn import (
    Connack,
    Connect,
    GatewayConfig,
    MessageReceived,
    PredefinedTopics,
    Puback,
    Publish,
    Regack,
    Register,
    ReturnCode,
    WillMsg,
    WillMsgReq,
    WillTopic,
    WillTopicReq,
    decode,
    encode,
)
from tests.support.broker import Mosquitto

pytestmark = pytest.mark.integration

PREDEF = PredefinedTopics.parse("*, sn/predef/one, 1\n*, sn/predef/down, 2\n")


class Watcher:
    """A paho subscriber (or publisher) on the real broker."""

    def __init__(self, broker: Mosquitto, topic: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topic is not None:
            self.client.subscribe(topic, 2)
            assert self.subscribed.wait(5)

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, m.payload, m.qos, bool(m.retain)))

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, int, bool]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < n and loop.time() < deadline:
            await asyncio.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@asynccontextmanager
async def gateway(broker: Mosquitto, **cfg: object) -> AsyncIterator[GatewayServer]:
    cfg.setdefault("predefined", PREDEF)
    config = GatewayConfig(**cfg)  # type: ignore[arg-type]
    async with GatewayServer(config, (broker.host, broker.port), ("127.0.0.1", 0)) as gw:
        yield gw


async def next_message(c: UdpClient, timeout: float = 10.0) -> MessageReceived:
    async def first() -> MessageReceived:
        async for m in c.messages:
            return m
        raise AssertionError("message stream ended")

    return await asyncio.wait_for(first(), timeout)


@pytest.mark.parametrize("mode", ["transparent", "aggregating"])
def test_client_publishes_every_qos_and_paho_sees_it(mosquitto: Mosquitto, mode: str) -> None:
    async def main() -> None:
        watcher = Watcher(mosquitto, "sn/#")
        try:
            async with gateway(mosquitto, mode=mode) as gw:
                async with UdpClient(gw.address, "pub-1", predefined={"sn/predef/one": 1}) as c:
                    await c.publish("sn/predef/one", b"qos -1", qos=-1)
                    await c.publish("sn/normal", b"qos 0", qos=0)
                    await c.publish("sn/normal", b"qos 1", qos=1)
                    await c.publish("sn/normal", b"qos 2", qos=2)
                    await c.publish("sn", b"short", qos=1, short=True)
                    await c.publish("sn/retained", b"kept", qos=1, retain=True)
                    got = await watcher.wait_for(6)
        finally:
            watcher.close()
        assert sorted(got) == sorted(
            [
                ("sn/predef/one", b"qos -1", 0, False),
                ("sn/normal", b"qos 0", 0, False),
                ("sn/normal", b"qos 1", 1, False),
                ("sn/normal", b"qos 2", 2, False),
                ("sn", b"short", 1, False),
                ("sn/retained", b"kept", 1, False),
            ]
        )
        # the retained flag reached the broker: a late subscriber gets it
        late = Watcher(mosquitto, "sn/retained")
        try:
            async with asyncio.timeout(5):
                while not late.messages:
                    await asyncio.sleep(0.02)
            assert late.messages[0][:2] == ("sn/retained", b"kept") and late.messages[0][3]
        finally:
            late.close()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["transparent", "aggregating"])
def test_mqtt_publisher_reaches_mqttsn_subscribers(mosquitto: Mosquitto, mode: str) -> None:
    async def main() -> None:
        pub = Watcher(mosquitto)
        try:
            async with gateway(mosquitto, mode=mode) as gw:
                async with UdpClient(gw.address, "sub-1", predefined={"sn/predef/down": 2}) as c:
                    s1 = await c.subscribe("sn/down/exact", qos=1)
                    s2 = await c.subscribe("sn/wild/#", qos=1)
                    s3 = await c.subscribe(2, qos=0)  # predefined id
                    assert s1.topic_id != 0 and s2.topic_id == 0 and s3.topic_id == 2
                    pub.publish("sn/down/exact", b"registered", 1)
                    m1 = await next_message(c)
                    pub.publish("sn/wild/a/b", b"wildcard", 1)
                    m2 = await next_message(c)  # gateway REGISTERs sn/wild/a/b first
                    pub.publish("sn/predef/down", b"predefined", 0)
                    m3 = await next_message(c)
        finally:
            pub.close()
        assert (m1.topic, m1.payload, m1.qos) == ("sn/down/exact", b"registered", 1)
        assert (m2.topic, m2.payload, m2.qos) == ("sn/wild/a/b", b"wildcard", 1)
        assert (m3.topic, m3.payload, m3.topic_id) == ("sn/predef/down", b"predefined", 2)

    asyncio.run(main())


def test_will_exchange_and_will_published_when_client_stops_pinging(mosquitto: Mosquitto) -> None:
    """Raw packets, so the test controls exactly when the client goes silent."""

    async def main() -> None:
        watcher = Watcher(mosquitto, "sn/will/#")
        loop = asyncio.get_running_loop()
        try:
            async with gateway(mosquitto) as gw:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(gw.address)

                async def rt(pkt: object) -> object:
                    await loop.sock_sendall(sock, encode(pkt))  # type: ignore[arg-type]
                    return decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))

                assert await rt(Connect("dying", 1, will=True)) == WillTopicReq()
                assert await rt(WillTopic("sn/will/dying", 1, False)) == WillMsgReq()
                assert await rt(WillMsg(b"node dying lost")) == Connack()
                # silence: keep-alive 1 s, the gateway gives up after 1.5 s
                got = await watcher.wait_for(1, timeout=6)
                sock.close()
        finally:
            watcher.close()
        assert got == [("sn/will/dying", b"node dying lost", 1, False)]

    asyncio.run(main())


def test_sleeping_client_gets_buffered_messages_and_pingresp(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        pub = Watcher(mosquitto)
        try:
            async with gateway(mosquitto) as gw:
                async with UdpClient(gw.address, "sleeper", keep_alive=30) as c:
                    await c.subscribe("sn/cmd/#", qos=1)
                    await c.sleep(60)
                    for i in range(3):
                        pub.publish(f"sn/cmd/{i}", f"while asleep {i}".encode(), 1)
                    await asyncio.sleep(0.3)
                    # wake() returns only at PINGRESP, which must follow the buffered messages
                    await asyncio.wait_for(c.wake(), 10)
                    got = [await next_message(c, 1) for _ in range(3)]
                    await c.connect()
        finally:
            pub.close()
        assert [m.payload for m in got] == [b"while asleep 0", b"while asleep 1", b"while asleep 2"]

    asyncio.run(main())


def test_publish_to_unknown_topic_id_is_refused_not_forwarded_empty(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        watcher = Watcher(mosquitto, "#")
        loop = asyncio.get_running_loop()
        try:
            async with gateway(mosquitto) as gw:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(gw.address)
                await loop.sock_sendall(sock, encode(Connect("bad-id", 30)))
                assert decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)) == Connack()
                await loop.sock_sendall(sock, encode(Publish(77, b"nowhere", 0)))
                ack = decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
                assert ack == Puback(77, 0, ReturnCode.INVALID_TOPIC_ID)
                # the connection to the broker is intact: a registered publish still works
                await loop.sock_sendall(sock, encode(Register(0, 1, "sn/ok")))
                reg = decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
                assert isinstance(reg, Regack)
                await loop.sock_sendall(sock, encode(Publish(reg.topic_id, b"fine", 1, 2)))
                assert decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)) == Puback(
                    reg.topic_id, 2
                )
                got = await watcher.wait_for(1)
                sock.close()
        finally:
            watcher.close()
        assert got == [("sn/ok", b"fine", 1, False)]
        assert "protocol error" not in mosquitto.log_text().lower()

    asyncio.run(main())


def test_max_size_datagram_passes_and_larger_is_refused_with_log(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        watcher = Watcher(mosquitto, "sn/big")
        try:
            async with gateway(mosquitto, max_packet_size=1500) as gw:
                async with UdpClient(gw.address, "big-1") as c:
                    await c.register("sn/big")
                    await c.publish("sn/big", b"x" * (1500 - 9), qos=1)  # 3-byte length form
                    with pytest.raises(RequestRefused) as err:
                        await c.publish("sn/big", b"y" * (1500 - 8), qos=1)
                    assert err.value.return_code == ReturnCode.NOT_SUPPORTED
                    got = await watcher.wait_for(1)
        finally:
            watcher.close()
        assert len(got) == 1 and got[0][1] == b"x" * 1491

    with caplog.at_level(logging.WARNING, logger="meshota.gateway"):
        asyncio.run(main())
    assert any("oversize: 1501 bytes > maximum 1500" in r.getMessage() for r in caplog.records)
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)


def test_burst_of_5000_qos0_publishes_from_one_client_loses_none(mosquitto: Mosquitto) -> None:
    n = 5000

    async def main() -> None:
        watcher = Watcher(mosquitto, "sn/burst")
        loop = asyncio.get_running_loop()
        try:
            async with gateway(mosquitto) as gw:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
                sock.connect(gw.address)
                sock.settimeout(5)

                def handshake_and_burst() -> None:
                    sock.send(encode(Connect("burst", 60)))
                    assert decode(sock.recv(2048)) == Connack()
                    sock.send(encode(Register(0, 1, "sn/burst")))
                    reg = decode(sock.recv(2048))
                    assert isinstance(reg, Regack)
                    for i in range(n):  # back to back, no pacing
                        sock.send(encode(Publish(reg.topic_id, i.to_bytes(4, "big"), 0)))

                await loop.run_in_executor(None, handshake_and_burst)
                got = await watcher.wait_for(n, timeout=60)
                sock.close()
        finally:
            watcher.close()
        seqs = [int.from_bytes(m[1], "big") for m in got]
        assert len(seqs) == n, f"lost {n - len(seqs)} of {n}"
        assert seqs == list(range(n))  # and in order

    asyncio.run(main())
