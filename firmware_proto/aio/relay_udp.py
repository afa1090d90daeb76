"""``meshota relay``: the root-node relay over real UDP (asyncio driver of :class:`RelayCore`).

    meshota relay --gateway udp://HOST:PORT --listen udp://HOST:PORT

Children send their (DTLS) datagrams to ``--listen``; each is wrapped in MQTT-SN forwarder
encapsulation and sent to ``--gateway`` from one socket, and the gateway's encapsulated replies
are unwrapped to the child they name. Exit status: 0 on SIGINT/SIGTERM, 2 with a one-line
message naming the bad value for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Hashable, Sequence
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

from firmware_proto.relay import RelayCore

__all__ = ["RelayConfigError", "RelayUdp", "parse_udp_url", "relay_main", "run_relay"]


class RelayConfigError(ValueError):
    """A command-line value is unusable; the message names it."""


def parse_udp_url(value: str, option: str) -> tuple[str, int]:
    """``udp://HOST:PORT`` → ``(host, port)``; IPv6 hosts in brackets."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme != "udp" or not parts.hostname or port is None:
        raise RelayConfigError(f"{option}: bad value {value!r}: expected udp://HOST:PORT")
    if parts.path not in ("", "/") or parts.query:
        raise RelayConfigError(f"{option}: bad value {value!r}: expected udp://HOST:PORT")
    return parts.hostname, port


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


async def run_relay(
    gateway: tuple[str, int], listen: tuple[str, int], stop: asyncio.Event
) -> RelayUdp:
    """Run a relay until ``stop`` is set (tests pass their own event)."""
    relay = RelayUdp(gateway, listen)
    await relay.start()
    try:
        await stop.wait()
    finally:
        relay.close()
    return relay


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"meshota relay: {message}", file=sys.stderr)
        raise SystemExit(2)


def relay_main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="meshota relay", description="root-node relay over real UDP")
    parser.add_argument("--gateway", required=True, help="udp://HOST:PORT of the MQTT-SN gateway")
    parser.add_argument("--listen", required=True, help="udp://HOST:PORT children send to")
    args = parser.parse_args(argv)
    try:
        gateway = parse_udp_url(args.gateway, "--gateway")
        listen = parse_udp_url(args.listen, "--listen")
    except RelayConfigError as exc:
        print(f"meshota relay: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        relay = RelayUdp(gateway, listen)
        try:
            await relay.start()
        except RelayConfigError as exc:
            print(f"meshota relay: {exc}", file=sys.stderr)
            return 2
        print(f"meshota relay: {relay.listen_address} -> {gateway}", file=sys.stderr)
        try:
            await stop.wait()
        finally:
            relay.close()
        return 0

    return asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(relay_main())
