"""asyncio drivers of the weekly count on the node ↔ root hop (cores in firmware_proto/counting.py).

:class:`NodeCountUdp` (node): one UDP socket; drives a :class:`NodeCounter` with ``loop.call_later``
and sends its reports to the root's count address. :class:`RootCountUdp` (root): one UDP socket;
drives a :class:`RootCounter` (acknowledgements back to each child), counts the root itself with
its own :class:`NodeCounter`, and delivers each sealed count record with ``deliver(record)`` (the
root's sealed uplink, e.g. :meth:`RootCountUdp.sealed_delivery`) until the server answered it.

Both take ``clock`` (wall time: countme windows are calendar weeks); the loop's timers only wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from firmware_proto.aio.sealed_uplink_udp import SealedUplinkUdp
from firmware_proto.counting import NodeCounter, RootCounter
from firmware_proto.device_api import DeviceApiError
from firmware_proto.inventory_levels import NodeInventory
from wire.countme import CountRecordError, check_label
from wire.sealed import RecordOp

__all__ = ["DeliverFn", "NodeCountUdp", "RootCountUdp"]

log = logging.getLogger("meshota.device")

DeliverFn = Callable[[bytes], Awaitable[int | None]]
_OWN = "own"  # the root's own report (children are (host, port) tuples)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class _Timer:
    """One ``call_later`` for a core's ``next_timer`` in wall-clock time."""

    def __init__(self, clock: Callable[[], float], fire: Callable[[], None]) -> None:
        self.clock = clock
        self.fire = fire
        self._handle: asyncio.TimerHandle | None = None

    def set(self, at: float | None) -> None:
        self.cancel()
        if at is not None:
            delay = max(0.0, at - self.clock())
            self._handle = asyncio.get_running_loop().call_later(delay, self._run)

    def _run(self) -> None:
        self._handle = None
        self.fire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class NodeCountUdp:
    """A node's weekly report to its root (one UDP socket, ``root`` = the root's count address)."""

    def __init__(
        self,
        counter: NodeCounter,
        root: tuple[str, int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counter = counter
        self.root = root
        self.clock = clock
        self.frames_sent = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._timer = _Timer(clock, self._on_timer)

    async def open(self) -> NodeCountUdp:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self._on_datagram), local_addr=("127.0.0.1", 0)
        )
        self._on_timer()
        return self

    def close(self) -> None:
        self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def reboot(self, version: str) -> None:
        """The node (re)booted into ``version``: a fresh counter over the same flash (a version
        that is no count label, e.g. with spaces, is counted as ``other``)."""
        old = self.counter
        try:
            inv = NodeInventory(old.inventory.device_type, check_label(version, "firmware version"))
        except CountRecordError:
            inv = NodeInventory(old.inventory.device_type, "other")
        self.counter = NodeCounter(
            old.flash, inv, old.rng, spread=old.spread, retry=old.retry, max_retry=old.max_retry
        )
        if self._transport is not None:
            self._on_timer()

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        try:
            self.counter.receive(data, self.clock())
        except CountRecordError as exc:
            log.info("dropped count frame from %s: %s", addr, exc)
            return
        self._timer.set(self.counter.next_timer())

    def _on_timer(self) -> None:
        self.counter.handle_timer(self.clock())
        for frame in self.counter.frames_to_send():
            if self._transport is not None:
                self.frames_sent += 1
                self._transport.sendto(frame, self.root)
        self._timer.set(self.counter.next_timer())


class RootCountUdp:
    """A root's tally of its children and itself; sealed count records out through ``deliver``."""

    def __init__(
        self,
        counter: RootCounter,
        deliver: DeliverFn,
        *,
        own: NodeCounter | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        clock: Callable[[], float] = time.time,
        retry: float = 30.0,
    ) -> None:
        self.counter = counter
        self.deliver = deliver
        self.own = own
        self.listen = listen
        self.clock = clock
        self.retry = retry
        self.address: tuple[str, int] = ("", 0)
        self.answers: list[int] = []  # the server's status for each delivered record
        self._transport: asyncio.DatagramTransport | None = None
        self._timer = _Timer(clock, self._on_timer)
        self._delivering: asyncio.Task[None] | None = None
        self._retry_at: float | None = None

    @staticmethod
    def sealed_delivery(uplink: SealedUplinkUdp) -> DeliverFn:
        """``deliver`` over the root's own sealed uplink: the server's status, None if none came."""

        async def deliver(record: bytes) -> int | None:
            try:
                return (await uplink.call(RecordOp.COUNT, "", record)).status
            except DeviceApiError:
                return None

        return deliver

    async def open(self) -> RootCountUdp:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self._on_datagram), local_addr=self.listen
        )
        host, port = self._transport.get_extra_info("sockname")[:2]
        self.address = (str(host), int(port))
        self._on_timer()
        return self

    def close(self) -> None:
        self._timer.cancel()
        if self._delivering is not None:
            self._delivering.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        self.counter.receive(data, addr, self.clock())
        self._pump()

    def _on_timer(self) -> None:
        now = self.clock()
        if self.own is not None:
            self.own.handle_timer(now)
        self.counter.handle_timer(now)
        self._pump()

    def _pump(self) -> None:
        now = self.clock()
        while True:  # the root's own report and its acknowledgement stay in the process
            reports = self.own.frames_to_send() if self.own is not None else []
            for frame in reports:
                self.counter.receive(frame, _OWN, now)
            for sender, frame in self.counter.frames_to_send():
                if sender == _OWN:
                    if self.own is not None:
                        self.own.receive(frame, now)
                elif self._transport is not None:
                    self._transport.sendto(frame, cast(tuple[Any, ...], sender))
            if not reports:
                break
        if self.counter.pending() and self._delivering is None and (self._retry_at or 0) <= now:
            self._retry_at = None
            self._delivering = asyncio.get_running_loop().create_task(self._deliver())
        times = [t for t in (self.counter.next_timer(), self._retry_at) if t is not None]
        if self.own is not None and (t := self.own.next_timer()) is not None:
            times.append(t)
        self._timer.set(min(times) if times else None)

    async def _deliver(self) -> None:
        try:
            for record in self.counter.pending():
                status = await self.deliver(record)
                if status is None or status >= 500:
                    log.info("count record not delivered (%s); again in %.0f s", status, self.retry)
                    self._retry_at = self.clock() + self.retry
                    return
                if status >= 300:
                    log.warning("server refused a count record (%d): dropped", status)
                self.answers.append(status)
                self.counter.delivered(record)
        finally:
            self._delivering = None
            if self._transport is not None:
                self._pump()
