"""asyncio UDP driver for the sans-I/O MQTT-SN client session (aiomqtt-shaped).

    async with UdpClient(("127.0.0.1", 1883), "dev-1", keep_alive=60) as c:
        await c.subscribe("fw/dev-1/#", qos=1)
        await c.publish("dev/dev-1/status", b"up", qos=1)
        async for msg in c.messages:
            ...

All protocol logic lives in :class:`mqttsn.ClientSession`; this file only moves datagrams, runs the
session's timer with ``loop.call_at`` and turns events into awaited results and exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self

from mqttsn import (
    ClientEvent,
    ClientSession,
    ClientState,
    Connected,
    ConnectionLost,
    ConnectionRefused,
    Disconnected,
    MessageReceived,
    MqttSnError,
    PingResponse,
    ProtocolViolation,
    PublishAcked,
    Registered,
    ReturnCode,
    Subscribed,
    Unsubscribed,
    WakeCompleted,
    Will,
    WillUpdated,
)

__all__ = [
    "ConnectFailed",
    "ConnectionLostError",
    "RequestRefused",
    "UdpClient",
    "UdpClientError",
]

log = logging.getLogger(__name__)

# Error tree:
#   MqttSnError
#   └── UdpClientError
#       ├── ConnectFailed          CONNACK refused (return_code set) or no answer (return_code None)
#       ├── ConnectionLostError    retries exhausted, gateway DISCONNECT, socket closed
#       └── RequestRefused         PUBACK/REGACK/SUBACK/WILL*RESP with a non-zero return code


class UdpClientError(MqttSnError):
    """Base of the errors raised by :class:`UdpClient`."""


class ConnectFailed(UdpClientError):
    def __init__(self, message: str, return_code: int | None = None) -> None:
        super().__init__(message)
        self.return_code = return_code


class ConnectionLostError(UdpClientError):
    """The session is gone; pending requests and the message iterator fail with this."""


class RequestRefused(UdpClientError):
    def __init__(self, message: str, return_code: int) -> None:
        super().__init__(message)
        self.return_code = return_code


_END = None  # message queue sentinel: the session ended cleanly


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: UdpClient) -> None:
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._client._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the session's retransmissions deal with it.
        log.debug("UDP error: %r", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._on_transport_closed(exc)


class _TransportCore(Protocol):
    def receive_datagram(self, data: bytes, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[bytes]: ...
    def events(self) -> Sequence[object]: ...
    def get_timer(self) -> float | None: ...


class UdpClient:
    """An MQTT-SN v1.2 client over one UDP socket connected to one gateway."""

    def __init__(
        self,
        gateway: tuple[str, int],
        client_id: str,
        *,
        keep_alive: int = 60,
        clean_session: bool = True,
        will: Will | None = None,
        predefined: Mapping[str, int] | None = None,
        retry_interval: float = 10.0,
        max_retries: int = 5,
        connect_timeout: float | None = None,
        disconnect_timeout: float = 5.0,
        local_addr: tuple[str, int] | None = None,
        socket_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        self.gateway = gateway
        self.session = ClientSession(
            client_id,
            keep_alive=keep_alive,
            clean_session=clean_session,
            will=will,
            predefined=predefined,
            retry_interval=retry_interval,
            max_retries=max_retries,
        )
        self.connect_timeout = connect_timeout
        self.disconnect_timeout = disconnect_timeout
        self._local_addr = local_addr
        self._socket_buffer = socket_buffer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Answers matched by msg id, and the ones that come one at a time, in call order.
        self._by_id: dict[tuple[str, int], asyncio.Future[ClientEvent]] = {}
        self._fifo: dict[str, deque[asyncio.Future[ClientEvent]]] = {
            k: deque() for k in ("connect", "ping", "sleep", "wake", "disconnect", "will")
        }
        self._messages: asyncio.Queue[MessageReceived | BaseException | None] = asyncio.Queue()

    # ------------------------------------------------------------------ context manager

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._loop = loop
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), remote_addr=self.gateway, local_addr=self._local_addr
        )
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, self._socket_buffer)
                except OSError as exc:  # capped by the kernel (rmem_max) or refused
                    log.debug("setsockopt %s: %r", opt, exc)
        try:
            await self.connect()
        except BaseException:
            self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._transport is not None and self.session.state in (
                ClientState.ACTIVE,
                ClientState.ASLEEP,
                ClientState.AWAKE,
            ):
                try:
                    await asyncio.wait_for(self.disconnect(), self.disconnect_timeout)
                except (TimeoutError, UdpClientError, MqttSnError) as err:
                    log.debug("disconnect on exit failed: %r", err)
        finally:
            self._close()

    # ------------------------------------------------------------------ commands

    @property
    def state(self) -> ClientState:
        return self.session.state

    @property
    def messages(self) -> AsyncIterator[MessageReceived]:
        """Inbound PUBLISHes; ends after ``disconnect()``, raises ConnectionLostError on loss."""
        return self._iter_messages()

    async def connect(self) -> None:
        """CONNECT (also to come back from ASLEEP or after a lost connection)."""
        self._drop_end_markers()
        fut = self._expect("connect")
        self.session.connect(self._now())
        self._flush()
        timeout = self.connect_timeout
        if timeout is None:  # the session gives up by itself after its retries
            timeout = (self.session.max_retries + 2) * self.session.retry_interval
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ConnectFailed(f"no CONNACK from {self.gateway} within {timeout} s") from None
        except ConnectionLostError as exc:
            raise ConnectFailed(f"no CONNACK from {self.gateway}: {exc}") from None

    async def publish(
        self,
        topic: str | int,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        short: bool = False,
    ) -> int:
        """Publish; for QoS 1/2 wait for PUBACK/PUBCOMP. Returns the msg id (0 for QoS 0/-1)."""
        msg_id = self.session.publish(topic, payload, qos, retain, now=self._now(), short=short)
        if qos <= 0:
            self._flush()
            return msg_id
        fut = self._expect_id("publish", msg_id)
        self._flush()
        ev = await fut
        assert isinstance(ev, PublishAcked)
        self._check(ev.return_code, f"PUBLISH {topic!r}")
        return msg_id

    def publish_nowait(
        self,
        topic: str | int,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        short: bool = False,
    ) -> int:
        """Queue a publish and return at once (QoS 1/2 acks are not reported)."""
        msg_id = self.session.publish(topic, payload, qos, retain, now=self._now(), short=short)
        self._flush()
        return msg_id

    async def register(self, topic: str) -> int:
        """REGISTER a topic name; returns its topic id."""
        msg_id = self.session.register(topic, self._now())
        fut = self._expect_id("register", msg_id)
        self._flush()
        ev = await fut
        assert isinstance(ev, Registered)
        self._check(ev.return_code, f"REGISTER {topic!r}")
        return ev.topic_id

    async def subscribe(self, topic: str | int, qos: int = 0, *, short: bool = False) -> Subscribed:
        msg_id = self.session.subscribe(topic, qos, now=self._now(), short=short)
        fut = self._expect_id("subscribe", msg_id)
        self._flush()
        ev = await fut
        assert isinstance(ev, Subscribed)
        self._check(ev.return_code, f"SUBSCRIBE {topic!r}")
        return ev

    async def unsubscribe(self, topic: str | int, *, short: bool = False) -> None:
        msg_id = self.session.unsubscribe(topic, now=self._now(), short=short)
        fut = self._expect_id("unsubscribe", msg_id)
        self._flush()
        await fut

    async def ping(self) -> None:
        fut = self._expect("ping")
        self.session.ping(self._now())
        self._flush()
        await fut

    async def update_will(self, will: Will | None) -> None:
        futs = [self._expect("will")] if will is None else [self._expect("will"), self._expect("will")]
        self.session.update_will(will, self._now())
        self._flush()
        for fut in futs:
            ev = await fut
            assert isinstance(ev, WillUpdated)
            self._check(ev.return_code, f"WILL{ev.kind.upper()}UPD")

    async def sleep(self, duration: int) -> None:
        """DISCONNECT(duration); returns once the gateway confirmed (state ASLEEP)."""
        fut = self._expect("sleep")
        self.session.sleep(duration, self._now())
        self._flush()
        await fut

    async def wake(self) -> None:
        """PINGREQ(client id); buffered messages arrive on ``messages``; returns at PINGRESP."""
        fut = self._expect("wake")
        self.session.wake(self._now())
        self._flush()
        await fut

    async def disconnect(self) -> None:
        fut = self._expect("disconnect")
        self.session.disconnect(self._now())
        self._flush()
        await fut

    # ------------------------------------------------------------------ plumbing

    def _now(self) -> float:
        if self._loop is None or self._transport is None:
            raise ConnectionLostError("the client is not open (use `async with UdpClient(...)`)")
        return self._loop.time()

    def _expect(self, what: str) -> asyncio.Future[ClientEvent]:
        assert self._loop is not None
        fut: asyncio.Future[ClientEvent] = self._loop.create_future()
        self._fifo[what].append(fut)
        return fut

    def _expect_id(self, what: str, msg_id: int) -> asyncio.Future[ClientEvent]:
        assert self._loop is not None
        fut: asyncio.Future[ClientEvent] = self._loop.create_future()
        self._by_id[(what, msg_id)] = fut
        return fut

    @staticmethod
    def _check(return_code: int, what: str) -> None:
        if return_code != ReturnCode.ACCEPTED:
            name = return_code.name if isinstance(return_code, ReturnCode) else hex(return_code)
            raise RequestRefused(f"{what} refused by the gateway: {name}", return_code)

    # The object under the socket: the MQTT-SN session here; a subclass may put a layer in
    # between (DtlsUdpClient: the session inside a DTLS client) by overriding _core/_route.

    def _core(self) -> _TransportCore:
        return self.session

    def _route(self, ev: object) -> None:
        assert isinstance(ev, ClientEvent)
        self._dispatch(ev)

    def _on_datagram(self, data: bytes) -> None:
        self._core().receive_datagram(data, self._now())
        self._flush()

    def _on_timer(self) -> None:
        assert self._loop is not None
        at = self._timer_at
        self._timer = self._timer_at = None
        if self._transport is None:
            return
        # call_at may fire a hair before its time; never hand the session an earlier clock.
        now = self._loop.time() if at is None else max(self._loop.time(), at)
        self._core().handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        core = self._core()
        if self._transport is not None and self._loop is not None:
            for d in core.datagrams_to_send(self._loop.time()):
                self._transport.sendto(d)
        for ev in core.events():
            self._route(ev)
        self._reschedule()

    def _reschedule(self) -> None:
        at = self._core().get_timer() if self._transport is not None else None
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and self._loop is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _resolve(self, fut: asyncio.Future[ClientEvent] | None, ev: ClientEvent) -> None:
        if fut is not None and not fut.done():
            fut.set_result(ev)

    def _pop_fifo(self, what: str) -> asyncio.Future[ClientEvent] | None:
        q = self._fifo[what]
        while q:
            fut = q.popleft()
            if not fut.done():  # skip waiters that were cancelled
                return fut
        return None

    def _dispatch(self, ev: ClientEvent) -> None:
        if isinstance(ev, MessageReceived):
            self._messages.put_nowait(ev)
        elif isinstance(ev, PublishAcked):
            self._resolve(self._by_id.pop(("publish", ev.msg_id), None), ev)
        elif isinstance(ev, Registered):
            self._resolve(self._by_id.pop(("register", ev.msg_id), None), ev)
        elif isinstance(ev, Subscribed):
            self._resolve(self._by_id.pop(("subscribe", ev.msg_id), None), ev)
        elif isinstance(ev, Unsubscribed):
            self._resolve(self._by_id.pop(("unsubscribe", ev.msg_id), None), ev)
        elif isinstance(ev, Connected):
            self._resolve(self._pop_fifo("connect"), ev)
        elif isinstance(ev, ConnectionRefused):
            fut = self._pop_fifo("connect")
            if fut is not None:
                rc = ev.return_code
                fut.set_exception(ConnectFailed(f"CONNACK refused: {rc!r}", rc))
        elif isinstance(ev, PingResponse):
            self._resolve(self._pop_fifo("ping"), ev)
        elif isinstance(ev, WakeCompleted):
            self._resolve(self._pop_fifo("wake"), ev)
        elif isinstance(ev, WillUpdated):
            self._resolve(self._pop_fifo("will"), ev)
        elif isinstance(ev, Disconnected):
            self._on_disconnected(ev)
        elif isinstance(ev, ConnectionLost):
            self._fail_all(ConnectionLostError(ev.reason))
        elif isinstance(ev, ProtocolViolation):
            log.debug("dropped datagram from %s: %s", self.gateway, ev.reason)
        else:  # GatewayFound: discovery is not this driver's job
            log.debug("event %r", ev)

    def _on_disconnected(self, ev: Disconnected) -> None:
        if ev.duration is not None:
            self._resolve(self._pop_fifo("sleep"), ev)
            return
        fut = self._pop_fifo("disconnect")
        if fut is not None:
            fut.set_result(ev)
            self._fail_all(ConnectionLostError("disconnected"), clean=True)
        else:
            self._fail_all(ConnectionLostError("the gateway ended the session (DISCONNECT)"))

    def _fail_all(self, exc: ConnectionLostError, *, clean: bool = False) -> None:
        futs = list(self._by_id.values())
        self._by_id.clear()
        for q in self._fifo.values():
            futs.extend(q)
            q.clear()
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # nobody may await a cancelled caller's future: mark retrieved
        self._messages.put_nowait(_END if clean else exc)

    def _on_transport_closed(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._transport = None
            self._fail_all(ConnectionLostError(f"UDP socket closed: {exc!r}"))
            self._reschedule()

    def _close(self) -> None:
        transport, self._transport = self._transport, None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        if transport is not None:
            transport.close()
            self._fail_all(ConnectionLostError("client closed"), clean=True)

    def _drop_end_markers(self) -> None:
        """A new connection: forget how the previous one ended, keep undelivered messages."""
        kept = []
        while not self._messages.empty():
            item = self._messages.get_nowait()
            if isinstance(item, MessageReceived):
                kept.append(item)
        for item in kept:
            self._messages.put_nowait(item)

    async def _iter_messages(self) -> AsyncIterator[MessageReceived]:
        while True:
            item = await self._messages.get()
            if isinstance(item, MessageReceived):
                yield item
                continue
            self._messages.put_nowait(item)  # let every other iterator see the end too
            if item is None:
                return
            raise item
