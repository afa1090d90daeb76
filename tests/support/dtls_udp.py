"""Tiny asyncio UDP drivers for the sans-I/O DTLS objects (test support only).

:class:`EchoDtlsGateway` runs a ``DtlsServer`` on a loopback socket and answers every application
record with ``b"echo:" + plaintext``. It understands MQTT-SN forwarder encapsulation: traffic that
comes wrapped is keyed ``(relay_address, node_id)`` and answered wrapped, to the same relay —
the shape the real gateway driver will have. :class:`UdpDtlsClient` runs a ``DtlsClient``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from bridge.gateway.dtls_server import ApplicationData, DtlsServer, looks_like_dtls
from firmware_proto import dtls_client as dc
from mqttsn import DecodeError, Encapsulated, decode, encode


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class EchoDtlsGateway:
    def __init__(self, server: DtlsServer) -> None:
        self.server = server
        self.events: list[Any] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        self.transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Proto(self._received), local_addr=("127.0.0.1", 0)
        )
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    def _received(self, data: bytes, addr: Any) -> None:
        assert self._loop is not None
        peer: Hashable = addr
        if not looks_like_dtls(data):  # forwarder encapsulation: byte 2 is Ctrl, not 0xFD
            try:
                packet = decode(data)
            except DecodeError:
                return
            assert isinstance(packet, Encapsulated)
            peer, data = (addr, packet.node_id), packet.inner
        self.server.receive_datagram(data, peer, self._loop.time())
        self._flush()

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self.server.handle_timer(self._loop.time())
        self._flush()

    def _flush(self) -> None:
        assert self._loop is not None and self.transport is not None
        for event in self.server.events():
            self.events.append(event)
            if isinstance(event, ApplicationData):
                self.server.send(event.peer, b"echo:" + event.plaintext)
        for peer, datagram in self.server.datagrams_to_send():
            if isinstance(peer, tuple) and len(peer) == 2 and isinstance(peer[1], bytes):
                relay, node_id = peer
                self.transport.sendto(encode(Encapsulated(node_id=node_id, inner=datagram)), relay)
            else:
                self.transport.sendto(datagram, peer)  # type: ignore[arg-type]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.server.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)


class UdpDtlsClient:
    def __init__(self, client: dc.DtlsClient, remote: tuple[str, int]) -> None:
        self.client = client
        self.remote = remote
        self.events: list[dc.ClientEvent] = []
        self.changed = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Proto(self._received), remote_addr=self.remote
        )
        self.client.start(self._loop.time())
        self._flush()

    def _received(self, data: bytes, addr: Any) -> None:
        assert self._loop is not None
        self.client.receive_datagram(data, self._loop.time())
        self._flush()

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self.client.handle_timer(self._loop.time())
        self._flush()

    def send(self, plaintext: bytes) -> None:
        self.client.send(plaintext)
        self._flush()

    def _flush(self) -> None:
        assert self._loop is not None and self.transport is not None
        for datagram in self.client.datagrams_to_send():
            self.transport.sendto(datagram)
        new = self.client.events()
        if new:
            self.events.extend(new)
            self.changed.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.client.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    async def wait_for(self, kind: type, timeout: float = 10.0) -> Any:
        async def scan() -> Any:
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
