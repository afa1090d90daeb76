"""The MQTT 5 client, asyncio half: :class:`Mqtt5Client` runs a
:class:`~bridge.mqtt5._session.Mqtt5Session` on a TCP connection and only moves bytes.

One ``data_received`` parses every packet the read brought; everything the session wants to send
during one event-loop turn leaves in one ``write``; keep-alive PINGREQs and the 1.5 x keep-alive
silence limit run on the loop's timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from ._codec import (
    ConnAck,
    Mqtt5ConnectError,
    Mqtt5Error,
    Mqtt5ProtocolError,
    PubAck,
    PublishIn,
    ServerDisconnect,
    SubAck,
    UnsubAck,
)
from ._session import ConnectOptions, Mqtt5Session

__all__ = ["Mqtt5Client"]


class Mqtt5Client(asyncio.Protocol):
    """Runs a :class:`Mqtt5Session` on a TCP connection.

    ``on_message(PublishIn)`` and ``on_published(mid, reason)`` (a QoS 1/2 PUBLISH of ours was
    acknowledged; reason >= 0x80: refused) run synchronously in ``data_received``; with
    ``auto_ack`` the PUBACK/PUBREC for an incoming QoS 1/2 PUBLISH is sent after ``on_message``
    returns, else when the owner calls :meth:`ack`. :attr:`closed` completes (with the reason as
    exception) when the connection ends for any reason other than :meth:`close`.
    """

    def __init__(
        self,
        session: Mqtt5Session,
        on_message: Callable[[PublishIn], None],
        on_published: Callable[[int, int], None] | None = None,
    ) -> None:
        self.session = session
        self.on_message = on_message
        self.on_published = on_published
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.closed: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[ConnAck] = loop.create_future()
        self._subacks: dict[int, asyncio.Future[SubAck | UnsubAck]] = {}
        self._flush_scheduled = False
        self._last_in = self._last_out = loop.time()
        self._keepalive_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        options: ConnectOptions,
        on_message: Callable[[PublishIn], None],
        on_published: Callable[[int, int], None] | None = None,
        *,
        timeout: float = 10.0,
        auto_ack: bool = True,
    ) -> tuple[Mqtt5Client, ConnAck]:
        """Open the connection and wait for a successful CONNACK (else :class:`Mqtt5Error`)."""
        loop = asyncio.get_running_loop()
        client = cls(Mqtt5Session(options, auto_ack=auto_ack), on_message, on_published)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: client, host, port), timeout)
            ack = await asyncio.wait_for(asyncio.shield(client._connack), timeout)
        except (OSError, TimeoutError) as exc:
            client.close()
            why = str(exc) or type(exc).__name__
            raise Mqtt5Error(f"cannot connect to {host}:{port}: {why}") from None
        except Mqtt5Error:
            client.close()
            raise
        if ack.reason >= 0x80:
            client.close()
            raise Mqtt5ConnectError(f"CONNACK refused with reason {ack.reason:#04x}", ack.reason)
        client._arm_keepalive()
        return client, ack

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> tuple[int, ...]:
        """Subscribe and wait for the SUBACK; :class:`Mqtt5ConnectError` if a filter was refused."""
        self._check_open()
        ack = await self._await_ack(self.session.subscribe(filters), timeout)
        for (topic_filter, _), reason in zip(filters, ack.reasons, strict=False):
            if reason >= 0x80:
                raise Mqtt5ConnectError(f"subscription {topic_filter!r} refused ({reason:#04x})", reason)
        return ack.reasons

    async def unsubscribe(self, filters: list[str], timeout: float = 10.0) -> tuple[int, ...]:
        """Unsubscribe and wait for the UNSUBACK; returns its reason codes."""
        self._check_open()
        return (await self._await_ack(self.session.unsubscribe(filters), timeout)).reasons

    async def _await_ack(self, mid: int, timeout: float) -> SubAck | UnsubAck:
        fut: asyncio.Future[SubAck | UnsubAck] = self._loop.create_future()
        self._subacks[mid] = fut
        self._flush()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise Mqtt5Error("no SUBACK/UNSUBACK") from None

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, properties: bytes = b"\x00", retain: bool = False
    ) -> int:
        """Queue a PUBLISH; it leaves with everything else queued in this event-loop turn."""
        self._check_open()
        mid = self.session.publish(topic, payload, qos, properties, retain)
        self._schedule_flush()
        return mid

    def pause_reading(self) -> None:
        """Read nothing more: PUBLISHes the broker sends from now on stay unacknowledged, so a
        persistent session gets them again after the next connect."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def ack(self, mid: int) -> bool:
        """Acknowledge the server's QoS 1/2 PUBLISH ``mid`` (without ``auto_ack``); it leaves with
        everything else queued in this event-loop turn. False if the connection is gone or the
        session holds no such message."""
        if self.closed.done() or self._transport is None or not self.session.ack(mid):
            return False
        self._schedule_flush()
        return True

    def write_backlog(self) -> int:
        """Bytes queued for the socket and not yet written (the transport's buffer plus ours)."""
        transport = self._transport
        size = transport.get_write_buffer_size() if transport is not None else 0
        return size + len(self.session.outgoing)

    def close(self) -> None:
        """Send DISCONNECT (normal) and close; :attr:`closed` completes without an exception."""
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self.session.disconnect()
            self._flush()
            self._transport.close()
        if not self.closed.done():
            self.closed.set_result(None)
        self._fail_waiters(Mqtt5Error("connection closed"))

    # -- internals --

    def _check_open(self) -> None:
        if self.closed.done() or self._transport is None:
            raise Mqtt5Error("not connected")

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.session.outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(self.session.take_outgoing())
            self._last_out = self._loop.time()

    def _fail(self, exc: Mqtt5Error) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()  # retrieved: the owner may be gone already
        self._fail_waiters(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail_waiters(self, exc: Mqtt5Error) -> None:
        waiters: list[asyncio.Future[Any]] = [self._connack, *self._subacks.values()]
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: nobody may be waiting any more

    def _arm_keepalive(self) -> None:
        ka = self.session.keepalive
        if ka <= 0 or self.closed.done():
            return
        now = self._loop.time()
        if now - self._last_in > 1.5 * ka:
            self._fail(Mqtt5Error(f"no packet from the server for {1.5 * ka:.0f} s"))
            return
        if now - self._last_out >= ka * 0.9:
            self.session.ping()
            self._flush()
        self._keepalive_timer = self._loop.call_later(ka / 2, self._arm_keepalive)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._flush()  # CONNECT

    def data_received(self, data: bytes) -> None:
        self._last_in = self._loop.time()
        try:
            events = self.session.receive(data)
        except Mqtt5ProtocolError as exc:
            self.session.disconnect(0x81)  # malformed packet
            self._flush()
            self._fail(exc)
            return
        for event in events:
            if isinstance(event, PublishIn):
                self.on_message(event)
            elif isinstance(event, PubAck):
                if self.on_published is not None:
                    self.on_published(event.mid, event.reason)
            elif isinstance(event, ConnAck):
                if not self._connack.done():
                    self._connack.set_result(event)
            elif isinstance(event, SubAck | UnsubAck):
                fut = self._subacks.pop(event.mid, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
            elif isinstance(event, ServerDisconnect):
                detail = f": {event.message}" if event.message else ""
                self._fail(Mqtt5Error(f"server sent DISCONNECT {event.reason:#04x}{detail}"))
                return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(Mqtt5Error(f"connection lost: {exc}" if exc else "connection closed by the server"))
