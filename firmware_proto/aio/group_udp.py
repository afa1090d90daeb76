"""asyncio group link over UDP multicast (IPv4), for loopback tests and LAN roots.

Each endpoint has two sockets: one bound to the multicast group port (joined on ``interface``,
SO_REUSEADDR so every endpoint on a host receives every group frame) and one unicast socket on
``interface:0`` that it sends from — its address names the endpoint as ``sender``. Multicast on
``lo`` works on Linux when the group is joined on 127.0.0.1 with IP_MULTICAST_IF/LOOP set
(checked by tests/firmware_proto/aio/test_group_udp.py); frames an endpoint sent itself are dropped.

The endpoint drives one core (``receive(frame, sender, now)``, ``next_timer()``,
``handle_timer(now)``) with ``loop.time()`` as ``now`` and one ``call_at`` timer; ``after`` is
called after every input so the owner can collect the core's actions.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Hashable
from typing import Any, Protocol

__all__ = ["GroupCore", "GroupUdpEndpoint"]


class GroupCore(Protocol):
    # (UpdateAgent.receive returns a may-skip hint that this driver does not need)
    def receive(self, data: bytes, sender: Hashable, now: float) -> object: ...
    def next_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class _Rx(asyncio.DatagramProtocol):
    def __init__(self, on_frame: Callable[[bytes, Any], None]) -> None:
        self.on_frame = on_frame

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_frame(data, addr)


class GroupUdpEndpoint:
    def __init__(self, group: tuple[str, int], interface: str = "127.0.0.1") -> None:
        self.group = group
        self.interface = interface
        self.core: GroupCore | None = None
        self.after: Callable[[], None] = lambda: None
        self.address: tuple[str, int] = ("", 0)
        self.bytes_sent = 0
        self._tx: asyncio.DatagramTransport | None = None
        self._rx: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()

    async def open(self) -> GroupUdpEndpoint:
        self._loop = asyncio.get_running_loop()
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(self.group)
        mreq = struct.pack("4s4s", socket.inet_aton(self.group[0]), socket.inet_aton(self.interface))
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.interface))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        tx.bind((self.interface, 0))
        self.address = tx.getsockname()
        self._rx, _ = await self._loop.create_datagram_endpoint(lambda: _Rx(self._frame), sock=rx)
        self._tx, _ = await self._loop.create_datagram_endpoint(lambda: _Rx(self._frame), sock=tx)
        return self

    def attach(self, core: GroupCore, after: Callable[[], None] | None = None) -> None:
        self.core = core
        if after is not None:
            self.after = after
        self.kick()

    # -- GroupLink ---------------------------------------------------------------------------------
    def send_broadcast(self, frame: bytes) -> None:
        assert self._tx is not None
        self.bytes_sent += len(frame)
        self._tx.sendto(frame, self.group)

    def send_unicast(self, node: Hashable, frame: bytes) -> None:
        assert self._tx is not None
        self.bytes_sent += len(frame)
        self._tx.sendto(frame, node)  # type: ignore[arg-type]

    # -- driving the core ----------------------------------------------------------------------------
    def _frame(self, data: bytes, addr: Any) -> None:
        if self.core is None or tuple(addr[:2]) == self.address:
            return
        self.core.receive(data, tuple(addr[:2]), self._loop.time())
        self.kick()

    def kick(self) -> None:
        """Re-arm the timer after anything changed the core; let the owner collect actions."""
        self.after()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.core.next_timer() if self.core is not None else None
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.core is not None:
            self.core.handle_timer(self._loop.time())
        self.kick()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for transport in (self._rx, self._tx):
            if transport is not None:
                transport.close()
