"""A node's MQTT-SN client session inside its DTLS client: sans-I/O composition + asyncio driver.

:class:`DtlsNodeSession` puts a :class:`mqttsn.ClientSession` inside a
:class:`~firmware_proto.dtls_client.DtlsClient`: every MQTT-SN datagram the session produces
becomes one DTLS application-data record, every record from the gateway one MQTT-SN datagram. It
does no I/O and reads no clock, so the simulator can run it like the asyncio driver does::

    node = DtlsNodeSession(ClientSession("node-17"), PskClientConfig("node-17", key))
    node.start(now)                               # DTLS ClientHello
    node.session.connect(now)                     # MQTT-SN commands go to the inner session;
                                                  # they wait for the handshake, then leave
    node.receive_datagram(data, now) / node.handle_timer(now) when now >= node.get_timer()
    for d in node.datagrams_to_send(now): transmit(d)     # DTLS records only
    for e in node.events(): ...                   # MQTT-SN events + DTLS transport events

Transport events (from :mod:`firmware_proto.dtls_client`): ``SessionEstablished``,
``HandshakeFailed``, ``SessionClosed``. When DTLS ends while the MQTT-SN session is online (and
not asleep) the session is marked lost — ``ConnectionLost`` follows — and ``start(now)`` runs a
fresh handshake before the next ``connect``. A sleeping session survives a DTLS loss: the node
re-handshakes (``restart(now)``) when it wakes after a sleep longer than the gateway's DTLS idle
timeout.

:class:`DtlsUdpClient` is :class:`~firmware_proto.aio.mqttsn_udp.UdpClient` over that composition:
the same ``async with`` shape and methods; the handshake runs before CONNECT (and before a wake-up
when the DTLS session is gone). Point it at the gateway's ``--dtls`` address or at a relay's
``--listen`` address: the relay only ever sees DTLS records.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeAlias

from firmware_proto import dtls_client as dc
from firmware_proto.aio.mqttsn_udp import ConnectFailed, UdpClient
from mqttsn import ClientEvent, ClientSession, ClientState

log = logging.getLogger(__name__)

__all__ = ["DtlsNodeSession", "DtlsUdpClient", "NodeEvent"]

NodeEvent: TypeAlias = ClientEvent | dc.SessionEstablished | dc.SessionClosed | dc.HandshakeFailed

_LOSE_ON_DTLS_END = (ClientState.CONNECTING, ClientState.ACTIVE, ClientState.AWAKE)


class DtlsNodeSession:
    """A ClientSession carried by a DtlsClient (see the module docstring)."""

    def __init__(
        self,
        session: ClientSession,
        dtls: dc.ClientConfig,
        *,
        mtu: int = 1200,
        handshake_timeout_min: float = 1.0,
        handshake_timeout_max: float = 60.0,
    ) -> None:
        self.session = session
        self._dtls_config = dtls
        self._dtls_options: dict[str, Any] = {
            "mtu": mtu,
            "handshake_timeout_min": handshake_timeout_min,
            "handshake_timeout_max": handshake_timeout_max,
        }
        self.dtls = dc.DtlsClient(dtls, **self._dtls_options)
        self._held: list[bytes] = []  # MQTT-SN datagrams waiting for the handshake
        self.oversized = 0  # MQTT-SN datagrams dropped for not fitting one DTLS record
        self._out: list[bytes] = []
        self._events: list[NodeEvent] = []

    @property
    def established(self) -> bool:
        return self.dtls.state is dc.ClientState.ESTABLISHED

    # --- inputs ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin a DTLS handshake (a fresh one when the previous DTLS session ended)."""
        if self.dtls.state is dc.ClientState.CLOSED:
            self.dtls = dc.DtlsClient(self._dtls_config, **self._dtls_options)
        if self.dtls.state is dc.ClientState.IDLE:
            self.dtls.start(now)
        self._pump(now)

    def restart(self, now: float) -> None:
        """Drop the current DTLS session (close_notify) and handshake anew.

        For a node back from a sleep longer than the gateway's DTLS idle timeout: the gateway
        forgot the session without telling (it cannot authenticate anything to an absent peer).
        """
        if self.dtls.state is not dc.ClientState.CLOSED:
            self.dtls.close()
            self._pump(now)
        self.start(now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        self.dtls.receive_datagram(data, now)
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        t = self.dtls.get_timer()
        if t is not None and now >= t:
            self.dtls.handle_timer(now)
        t = self.session.get_timer()
        if t is not None and now >= t:
            self.session.handle_timer(now)
        self._pump(now)

    def close(self, now: float) -> None:
        """close_notify to the gateway (the MQTT-SN session is not told; DISCONNECT first)."""
        self.dtls.close()
        self._pump(now)

    # --- outputs -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times = [t for t in (self.dtls.get_timer(), self.session.get_timer()) if t is not None]
        return min(times) if times else None

    def datagrams_to_send(self, now: float) -> list[bytes]:
        self._pump(now)
        out, self._out = self._out, []
        return out

    def events(self) -> list[NodeEvent]:
        self._pump_events()
        out, self._events = self._events, []
        return out

    # --- internals ---------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        for _ in range(16):  # settles in one or two rounds; bounded in case of a bug
            moved = False
            for event in self.dtls.events():
                moved = True
                if isinstance(event, dc.ApplicationData):
                    self.session.receive_datagram(event.plaintext, now)
                    continue
                self._events.append(event)
                if isinstance(event, dc.SessionClosed | dc.HandshakeFailed):
                    self._held.clear()
                    if self.session.state in _LOSE_ON_DTLS_END:
                        self.session.transport_lost(f"DTLS session ended: {event.reason}")
            self._held.extend(self.session.datagrams_to_send(now))
            if self._held and self.established:
                held, self._held = self._held, []
                for datagram in held:
                    try:
                        self.dtls.send(datagram)
                    except dc.DatagramTooLarge as exc:
                        # dropped, the session stays up; the MQTT-SN request times out on its own
                        self.oversized += 1
                        if self.oversized == 1:
                            log.warning("MQTT-SN datagram dropped: %s (further ones counted)", exc)
                moved = True
            self._out.extend(self.dtls.datagrams_to_send())
            if not moved:
                break
        self._pump_events()

    def _pump_events(self) -> None:
        self._events.extend(self.session.events())


class DtlsUdpClient(UdpClient):
    """:class:`UdpClient` whose datagrams travel inside DTLS (PSK or certificate)::

        async with DtlsUdpClient(gateway_or_relay, "node-17", dtls=PskClientConfig("node-17", key)) as c:
            await c.publish("dev/node-17/status", b"up", qos=1)

    A handshake that fails or does not finish within ``handshake_timeout`` seconds raises
    :class:`~firmware_proto.aio.mqttsn_udp.ConnectFailed` from ``connect()`` (and ``async with``).
    """

    def __init__(
        self,
        gateway: tuple[str, int],
        client_id: str,
        *,
        dtls: dc.ClientConfig,
        handshake_timeout: float = 30.0,
        handshake_timeout_min: float = 1.0,
        handshake_timeout_max: float = 16.0,
        mtu: int = 1200,
        **options: Any,
    ) -> None:
        super().__init__(gateway, client_id, **options)
        self.node = DtlsNodeSession(
            self.session,
            dtls,
            mtu=mtu,
            handshake_timeout_min=handshake_timeout_min,
            handshake_timeout_max=handshake_timeout_max,
        )
        self.handshake_timeout = handshake_timeout
        self.dtls_events: list[dc.SessionEstablished | dc.SessionClosed | dc.HandshakeFailed] = []
        self._handshake: asyncio.Future[None] | None = None

    async def connect(self) -> None:
        await self._ensure_dtls()
        await super().connect()

    async def wake(self, *, new_dtls_session: bool = False) -> None:
        """PINGREQ(client id) as :meth:`UdpClient.wake`; ``new_dtls_session``: handshake first
        (after a sleep longer than the gateway's ``--dtls-idle-timeout``)."""
        await self._ensure_dtls(restart=new_dtls_session)
        await super().wake()

    async def _ensure_dtls(self, *, restart: bool = False) -> None:
        if self.node.established and not restart:
            return
        assert self._loop is not None
        if restart:
            self.node.restart(self._now())
        else:
            self.node.start(self._now())
        self._flush()  # the old session's SessionClosed goes by before we wait for the new one
        fut: asyncio.Future[None] = self._loop.create_future()
        self._handshake = fut
        try:
            await asyncio.wait_for(fut, self.handshake_timeout)
        except TimeoutError:
            raise ConnectFailed(
                f"DTLS handshake with {self.gateway} not done within {self.handshake_timeout} s"
            ) from None
        finally:
            self._handshake = None

    # --- transport plumbing (UdpClient's, routed through DTLS) -------------------------------

    def _core(self) -> DtlsNodeSession:
        return self.node

    def _route(self, ev: object) -> None:
        if isinstance(ev, dc.SessionEstablished | dc.SessionClosed | dc.HandshakeFailed):
            self._on_dtls_event(ev)
        else:
            super()._route(ev)

    def _on_dtls_event(self, ev: dc.SessionEstablished | dc.SessionClosed | dc.HandshakeFailed) -> None:
        self.dtls_events.append(ev)
        fut = self._handshake
        if fut is None or fut.done():
            return
        if isinstance(ev, dc.SessionEstablished):
            fut.set_result(None)
        else:
            fut.set_exception(ConnectFailed(f"DTLS handshake with {self.gateway} failed: {ev.reason}"))

    def _close(self) -> None:
        if self._transport is not None and self._loop is not None and self.node.established:
            self.node.close(self._loop.time())
            for d in self.node.datagrams_to_send(self._loop.time()):
                self._transport.sendto(d)
            self.node.events()
        super()._close()
