"""Keyless attacks on the MQTT-SN gateway (both listeners, real mosquitto) while a verified DTLS
node keeps round-tripping: PINGREQ hijack of a sleeping node, CONNECT with a victim's client id,
a CONNECT flood from one source, garbage floods on both ports."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from firmware_proto import dtls_client as dc
from firmware_proto.aio.dtls_node import DtlsUdpClient
from mqttsn import (
    Connack,
    Connect,
    DecodeError,
    Encapsulated,
    Packet,
    Pingreq,
    Publish,
    ReturnCode,
    decode,
    encode,
)
from tests.support.gateway_dtls import LogCapture, Watcher
from tests.support.security import DualGateway, VerifiedNode

pytestmark = pytest.mark.integration


@contextmanager
def running(attack: Callable[[threading.Event], None]) -> Iterator[threading.Event]:
    """Run ``attack(stop)`` on a thread for the duration of the block."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            attack(stop)
        except BaseException as exc:  # surfaced after the block
            errors.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def blast(s: socket.socket, data: bytes, addr: tuple[str, int]) -> bool:
    """Send without blocking; False when the socket buffer is full (the datagram is lost)."""
    try:
        s.sendto(data, addr)
    except BlockingIOError:
        return False
    return True


def drain(s: socket.socket) -> list[Packet]:
    got: list[Packet] = []
    while True:
        try:
            data = s.recv(65535)
        except (TimeoutError, BlockingIOError):
            return got
        try:
            got.append(decode(data))
        except DecodeError:
            continue


def test_pingreq_hijack_of_a_sleeping_dtls_node(
    dual_gateway: DualGateway, verified_node: VerifiedNode
) -> None:
    rig = dual_gateway
    feeder = Watcher(rig.broker)
    sleeper = DtlsUdpClient(rig.dtls, "node-b", dtls=dc.PskClientConfig("node-b", rig.keys["node-b"]),
                            clean_session=False)  # fmt: skip

    async def fall_asleep() -> None:
        await sleeper.__aenter__()
        await sleeper.subscribe("fw/node-b/token", qos=1)
        await sleeper.sleep(300)

    rig.run(fall_asleep())
    for i in range(5):
        feeder.publish("fw/node-b/token", f"TOKEN-{i}".encode(), qos=1)
    stolen: list[Packet] = []

    def hijack(stop: threading.Event) -> None:
        socks = [udp_socket() for _ in range(4)]
        try:
            while not stop.is_set():
                for s in socks:
                    blast(s, encode(Pingreq("node-b")), rig.udp)
                    blast(s, encode(Connect("node-b", 60, clean_session=False)), rig.udp)
                    stolen.extend(p for p in drain(s) if isinstance(p, Publish))
                time.sleep(0.005)
        finally:
            for s in socks:
                s.close()

    try:
        with running(hijack):
            for i in range(3):
                verified_node.round_trip_sync(f"hijack-{i}")
        assert stolen == []

        async def wake() -> list[bytes]:
            await sleeper.wake()
            got = []
            while len(got) < 5:
                got.append((await sleeper.messages.__anext__()).payload)
            await sleeper.__aexit__(None, None, None)
            return got

        assert rig.run(wake()) == [f"TOKEN-{i}".encode() for i in range(5)]
    finally:
        feeder.close()


def test_connect_with_the_victims_client_id(dual_gateway: DualGateway, verified_node: VerifiedNode) -> None:
    rig = dual_gateway
    answers: list[Packet] = []

    def usurp(stop: threading.Event) -> None:
        with udp_socket() as s:
            while not stop.is_set():
                for clean in (True, False):
                    blast(s, encode(Connect(verified_node.device, 60, clean_session=clean)), rig.udp)
                answers.extend(drain(s))
                time.sleep(0.002)

    with running(usurp):
        for i in range(3):
            verified_node.round_trip_sync(f"usurp-{i}")
    assert answers and set(answers) == {Connack(ReturnCode.NOT_SUPPORTED)}


def test_connect_flood_from_one_source(dual_gateway: DualGateway, verified_node: VerifiedNode) -> None:
    rig = dual_gateway
    cap = rig.server.gateway.config.max_unverified_per_source
    codes: dict[int, int] = {}
    sent = [0]

    def flood(stop: threading.Event) -> None:
        """3,000 CONNECTs with fresh client ids from one host: from 16 ports, and as nodes
        behind a (fake) forwarder (each node id a peer of its own)."""
        socks = [udp_socket() for _ in range(16)]
        try:
            n = 0
            while n < 3000 or not stop.is_set():  # at least 3,000, and for as long as the node works
                s = socks[n % len(socks)]
                connect = encode(Connect(f"flood-{n}", 60))
                if n % 2:
                    connect = encode(Encapsulated(n.to_bytes(2, "big"), connect))
                while not blast(s, connect, rig.udp):
                    time.sleep(0.001)
                sent[0] += 1
                n += 1
                if n % 50 == 0:
                    for sock in socks:
                        tally(drain(sock))
                    time.sleep(0.001)
            time.sleep(0.5)
            for sock in socks:
                tally(drain(sock))
        finally:
            for sock in socks:
                sock.close()

    def tally(packets: list[Packet]) -> None:
        for p in packets:
            if isinstance(p, Connack):
                codes[p.return_code] = codes.get(p.return_code, 0) + 1
            elif isinstance(p, Encapsulated):
                tally([decode(p.inner)])

    with running(flood):
        for i in range(3):
            verified_node.round_trip_sync(f"flood-{i}")
        deadline = time.monotonic() + 60
        while sent[0] < 3000 and time.monotonic() < deadline:
            verified_node.round_trip_sync(f"flood-more-{sent[0]}")
    assert sent[0] >= 3000
    verified_node.round_trip_sync("flood-after")

    async def count() -> tuple[int, int]:
        link = rig.server.link
        return len(link._conns), link.peak_connecting

    conns, peak = rig.run(count())
    # the verified node, the gateway's own connection, and at most `cap` keyless sessions
    assert conns <= cap + 2, conns
    assert peak <= rig.server.link.max_connecting
    stats = rig.stats()
    assert stats["datagrams_in"] >= 3000  # the flood and the node's own traffic
    # the encapsulated half are distinct peers of one source: all but `cap` refused
    assert stats.get("unverified_refused", 0) >= sent[0] // 2 - cap - 16
    assert codes.get(ReturnCode.CONGESTION, 0) > 0


def test_garbage_flood_on_both_ports(dual_gateway: DualGateway, verified_node: VerifiedNode) -> None:
    rig = dual_gateway
    sent = [0]

    def garbage(stop: threading.Event) -> None:
        rng = random.Random(12)
        with udp_socket() as s:
            while not stop.is_set() and sent[0] < 40_000:
                size = rng.randrange(1, 300)
                data = rng.randbytes(size)
                if rng.random() < 0.3:
                    data = bytes([size & 0xFF, 0xFE, 0]) + data  # bogus forwarder encapsulation
                sent[0] += blast(s, data, rig.udp if sent[0] % 2 else rig.dtls)
                if sent[0] % 200 == 0:
                    time.sleep(0.002)

    with LogCapture() as logs:
        with running(garbage):
            for i in range(3):
                verified_node.round_trip_sync(f"garbage-{i}")
            while sent[0] < 5000:
                time.sleep(0.05)
    warnings = [line for line in logs.lines if line.startswith("WARNING meshota.gateway")]
    # one line per kind per interval (plus summaries), not one per datagram
    assert sent[0] >= 5000
    assert len(warnings) < 100, warnings[:20]
    assert sum(len(w) for w in warnings) < 20_000
    logging.getLogger("meshota.gateway").setLevel(logging.NOTSET)
