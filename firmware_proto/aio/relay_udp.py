"""The root-node relay over real UDP: the asyncio driver of :class:`RelayCore`.

Children send their (DTLS) datagrams to the listen address; each is wrapped in MQTT-SN forwarder
encapsulation and sent to the gateway from one socket, and the gateway's encapsulated replies
are unwrapped to the child they name. The command line (``meshota relay``) is
meshota/cli/relay.py; this module takes parsed ``(host, port)`` addresses.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Hashable
from typing import Any, cast

from firmware_proto.relay import RelayCore

__all__ = ["RelayConfigError", "RelayUdp", "run_relay"]


class RelayConfigError(ValueError):
    """An address cannot be bound or reached; the message names the option (``--listen``,
    ``--gateway``)."""


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class RelayUdp:
    """One relay on two UDP sockets; ``start()`` binds, ``close()`` releases."""

    def __init__(self, gateway: tuple[str, int], listen: tuple[str, int]) -> None:
        self.gateway = gateway
        self.listen = listen
        self.core = RelayCore()
        self._children: asyncio.DatagramTransport | None = None
        self._uplink: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def listen_address(self) -> tuple[str, int]:
        assert self._children is not None
        host, port = self._children.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        try:
            self._children, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._from_child), local_addr=self.listen
            )
        except OSError as exc:
            raise RelayConfigError(f"--listen: cannot bind {self.listen}: {exc}") from None
        try:
            self._uplink, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._from_gateway), remote_addr=self.gateway
            )
        except OSError as exc:
            self.close()
            raise RelayConfigError(f"--gateway: cannot reach {self.gateway}: {exc}") from None

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _from_child(self, data: bytes, addr: Hashable) -> None:
        self.core.from_child(addr, data, self._now())
        self._flush()

    def _from_gateway(self, data: bytes, addr: Hashable) -> None:
        self.core.from_gateway(data, self._now())
        self._flush()

    def _flush(self) -> None:
        assert self._uplink is not None and self._children is not None
        for datagram in self.core.datagrams_to_gateway():
            self._uplink.sendto(datagram)
        for child, datagram in self.core.datagrams_to_children():
            self._children.sendto(datagram, cast(tuple[Any, ...], child))
        for event in self.core.events():
            print(f"meshota relay: dropped {event.direction}: {event.reason}", file=sys.stderr)

    def close(self) -> None:
        for transport in (self._children, self._uplink):
            if transport is not None:
                transport.close()


async def run_relay(gateway: tuple[str, int], listen: tuple[str, int], stop: asyncio.Event) -> RelayUdp:
    """Run a relay until ``stop`` is set (tests pass their own event)."""
    relay = RelayUdp(gateway, listen)
    await relay.start()
    try:
        await stop.wait()
    finally:
        relay.close()
    return relay
