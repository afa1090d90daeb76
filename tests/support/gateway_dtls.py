"""Helpers for the DTLS gateway tests: a gateway (UDP and/or DTLS) on real mosquitto, a paho
watcher, a test PKI on disk, relays that lose or tamper with datagrams."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bridge.gateway.dtls_listener import DtlsListener
from bridge.gateway.dtls_server import DtlsServer, ServerEvent
from bridge.gateway.udp import GatewayServer
from firmware_proto import dtls_client as dc
from firmware_proto.aio.relay_udp import RelayUdp
from firmware_proto.testing.dtls import make_ca, make_cert, write_pem
from mqttsn import BrokerAction, GatewayConfig, MessageReceived
from tests.support.broker import Mosquitto
from wire.dtls_credentials import CertificateCredentials, DtlsServerConfig

KEYS = {
    "node-a": bytes.fromhex("00112233445566778899aabbccddeeff"),
    "node-b": bytes.fromhex("ffeeddccbbaa99887766554433221100"),
    "node-c": bytes.fromhex("0123456789abcdef0123456789abcdef"),
}


def psk(identity: str, key: bytes | None = None) -> dc.PskClientConfig:
    return dc.PskClientConfig(identity, KEYS[identity] if key is None else key)


class Watcher:
    """A paho subscriber (or publisher) on the real broker."""

    def __init__(self, broker: Mosquitto, topic: str | None = None, client_id: str = "") -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topic is not None:
            self.client.subscribe(topic, 1)
            assert self.subscribed.wait(5)

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, m.payload, m.qos))

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, int]]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < n:
                await asyncio.sleep(0.01)
        with self._lock:
            return list(self.messages)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Pki:
    ca: Path
    gateway_cert: Path
    gateway_key: Path
    nodes: dict[str, tuple[Path, Path]]
    other_ca: Path
    rogue: tuple[Path, Path]  # a node certificate from another CA
    configs: dict[str, dc.CertificateClientConfig]
    rogue_config: dc.CertificateClientConfig

    def credentials(self) -> CertificateCredentials:
        return CertificateCredentials.from_files(self.gateway_cert, self.gateway_key, self.ca)


def make_pki(directory: Path, nodes: tuple[str, ...] = ("node-x1", "node-x2")) -> Pki:
    ca = make_ca("meshota test CA")
    other = make_ca("some other CA", serial=9)
    ca_path, _ = write_pem(directory, "ca", *ca)
    other_path, _ = write_pem(directory, "other-ca", *other)
    g_crt, g_key = make_cert(ca, "gateway", 10)
    gateway_cert, gateway_key = write_pem(directory, "gateway", g_crt, g_key)
    paths, configs = {}, {}
    for serial, name in enumerate(nodes, start=11):
        crt, key = make_cert(ca, name, serial)
        paths[name] = write_pem(directory, name, crt, key)
        configs[name] = dc.CertificateClientConfig(crt, key, ca[0])
    r_crt, r_key = make_cert(other, nodes[0], 99)  # same CN, wrong CA
    rogue = write_pem(directory, "rogue", r_crt, r_key)
    return Pki(
        ca_path,
        gateway_cert,
        gateway_key,
        paths,
        other_path,
        rogue,
        configs,
        dc.CertificateClientConfig(r_crt, r_key, ca[0]),
    )


@dataclass
class DtlsGateway:
    server: GatewayServer
    listener: DtlsListener
    actions: list[BrokerAction]
    dtls_events: list[ServerEvent]

    @property
    def dtls(self) -> DtlsServer:
        return self.listener.dtls


@asynccontextmanager
async def dtls_gateway(
    broker: Mosquitto,
    *,
    psk_keys: dict[str, bytes] | None = None,
    certificate: CertificateCredentials | None = None,
    udp: bool = False,
    config: GatewayConfig | None = None,
    **dtls_options: Any,
) -> AsyncIterator[DtlsGateway]:
    """A GatewayServer (plain UDP too when ``udp``) with a DtlsListener, on the real broker."""
    server = GatewayServer(
        config or GatewayConfig(), (broker.host, broker.port), ("127.0.0.1", 0) if udp else None
    )
    dtls = DtlsServer(DtlsServerConfig(psk=psk_keys, certificate=certificate), **dtls_options)
    listener = DtlsListener(server, dtls, ("127.0.0.1", 0))
    actions: list[BrokerAction] = []
    run = server.link.run

    def spy(action: BrokerAction) -> None:
        actions.append(action)
        run(action)

    server.link.run = spy  # type: ignore[method-assign]
    events: list[ServerEvent] = []
    listener.observers.append(events.append)
    await server.start()
    await listener.start()
    try:
        yield DtlsGateway(server, listener, actions, events)
    finally:
        await listener.close()
        await server.close()


# tamper(direction, datagram) -> datagrams to pass on instead ("up": child → gateway)
Tamper = Callable[[str, bytes], list[bytes]]


class TamperingRelay(RelayUdp):
    """A RelayUdp whose owner may drop, alter or inject what it forwards (a compromised root)."""

    def __init__(self, gateway: tuple[str, int], tamper: Tamper | None = None) -> None:
        super().__init__(gateway, ("127.0.0.1", 0))
        self.tamper = tamper
        self.uplink_log: list[bytes] = []  # every encapsulated datagram sent to the gateway

    def _from_child(self, data: bytes, addr: Hashable) -> None:
        for d in self.tamper("up", data) if self.tamper else [data]:
            super()._from_child(d, addr)

    def _from_gateway(self, data: bytes, addr: Hashable) -> None:
        for d in self.tamper("down", data) if self.tamper else [data]:
            super()._from_gateway(d, addr)

    def _flush(self) -> None:
        assert self._uplink is not None
        out = self.core.datagrams_to_gateway()
        self.uplink_log.extend(out)
        for datagram in out:
            self._uplink.sendto(datagram)
        super()._flush()

    def send_to_gateway(self, datagram: bytes) -> None:
        """Inject a datagram on the relay's own uplink socket (same source address)."""
        assert self._uplink is not None
        self._uplink.sendto(datagram)


def seeded_loss(rate: float, seed: int) -> tuple[Tamper, dict[str, int]]:
    rng = random.Random(seed)
    counts = {"up": 0, "down": 0, "lost": 0}

    def tamper(direction: str, datagram: bytes) -> list[bytes]:
        counts[direction] += 1
        if rng.random() < rate:
            counts["lost"] += 1
            return []
        return [datagram]

    return tamper, counts


async def next_message(messages: AsyncIterator[MessageReceived], timeout: float = 10.0) -> MessageReceived:
    return await asyncio.wait_for(anext(messages), timeout)


class LogCapture(logging.Handler):
    """Collect formatted records of the meshota loggers (caplog does not cross asyncio.run well)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    def __enter__(self) -> LogCapture:
        for name in ("meshota.gateway", "meshota.dtls"):
            logger = logging.getLogger(name)
            logger.addHandler(self)
            logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("meshota.gateway", "meshota.dtls"):
            logging.getLogger(name).removeHandler(self)

    def matching(self, *needles: str) -> list[str]:
        return [line for line in self.lines if all(n in line for n in needles)]
