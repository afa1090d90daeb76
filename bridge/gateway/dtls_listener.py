"""The gateway's DTLS listener: :class:`~bridge.gateway.dtls_server.DtlsServer` before the MQTT-SN Gateway.

Two layers, like the rest of the gateway:

* :class:`DtlsFront` — sans-I/O. Datagrams from the network go through the DTLS server; each
  decrypted record is one MQTT-SN datagram for the shared :class:`mqttsn.Gateway`, handed over
  with ``identity=`` the device id DTLS verified (PSK identity or certificate CN), so the Gateway
  refuses a CONNECT whose client id differs and stamps that id on everything it forwards. The
  Gateway's replies come back through :meth:`DtlsFront.deliver` and leave encrypted.
* :class:`DtlsListener` — the asyncio driver: one UDP socket, one timer, attached to a
  :class:`~bridge.gateway.udp.GatewayServer` so UDP and DTLS clients share one Gateway and one
  BrokerLink.

Peers. A datagram that starts with a DTLS record header comes from a node talking to us
directly: its DTLS session is keyed by the UDP address. Anything else must be MQTT-SN forwarder
encapsulation (a root relay): it is unwrapped, the DTLS session is keyed
``ForwardedPeer(relay address, wireless node id)`` and every answer goes back encapsulated to
that relay. (DTLS and encapsulation both have 0xFE at byte 1; byte 2 tells them apart — see
:func:`bridge.gateway.dtls_server.looks_like_dtls`.) In the Gateway the session is keyed ``DtlsPeer(link)``,
a type of its own, so a DTLS node can never be confused with a plain-UDP one.

Session ends. When a DTLS session closes (close_notify, fatal alert, idle timeout, the peer
starting a new handshake) or a new handshake from that peer fails or is refused, the Gateway
session behind it is ended as *lost* (its will is published), like an MQTT client whose TCP
connection dropped — unless it is asleep or awake (MQTT-SN sleeping clients outlive their
transport; the Gateway's own sleep supervision ends them). A session established by a different
device at the same peer ends whatever the previous device left there.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from bridge.gateway.dtls_server import (
    ApplicationData,
    DtlsServer,
    HandshakeFailed,
    NoSessionError,
    ServerEvent,
    SessionClosed,
    SessionEstablished,
    SessionRefused,
    looks_like_dtls,
)
from bridge.gateway.log_limit import DropLog
from bridge.gateway.udp import GatewayServer, set_socket_buffers
from mqttsn import (
    DecodeError,
    Encapsulated,
    ForwardedPeer,
    Gateway,
    decode,
    is_encapsulated,
    wrap,
)

__all__ = ["DtlsFront", "DtlsListener", "DtlsPeer"]

log = logging.getLogger("meshota.gateway")


@dataclass(frozen=True, slots=True)
class DtlsPeer:
    """A Gateway peer reached over DTLS; ``link`` is the DTLS session key (address or relay+node)."""

    link: Hashable

    def __str__(self) -> str:
        link = self.link
        if isinstance(link, ForwardedPeer):
            return f"dtls:{_addr(link.relay)}/node:{link.node_id.hex()}"
        return f"dtls:{_addr(link)}"


def _addr(addr: Hashable) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return repr(addr)


class DtlsFront:
    """Sans-I/O: a DtlsServer feeding a Gateway (see the module docstring).

    ``receive_datagram(data, addr, now)``, ``handle_timer(now)`` / ``get_timer()``; the Gateway's
    datagrams for :class:`DtlsPeer` peers go to ``deliver(peer, data, now)``; what to transmit
    comes out of ``datagrams_to_send()`` as ``(udp address, bytes)``, already encapsulated for
    relays. ``events()`` returns the DTLS server's events (for logs and tests). The caller drains
    the Gateway itself; :attr:`gateway_touched` says the Gateway was fed since the last look.
    """

    def __init__(self, server: DtlsServer, gateway: Gateway) -> None:
        self.server = server
        self.gateway = gateway
        self.gateway_touched = False
        self.stats: dict[str, int] = dict.fromkeys(
            ("not_dtls", "bad_encapsulation", "undeliverable", "gateway_sessions_ended"), 0
        )
        self._out: list[tuple[Hashable, bytes]] = []
        self._events: list[ServerEvent] = []
        # warnings about undecodable datagrams: one per kind per interval, with counts
        self.drop_log = DropLog()

    def _log_drop(self, kind: str, line: str, now: float) -> None:
        for text in self.drop_log.record(kind, line, now):
            log.warning("%s", text)

    # --- inputs ------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Hashable, now: float) -> None:
        """One datagram off the DTLS socket; never raises for anything the sender chose."""
        if self.server.screen(data, addr, now):  # a ClientHello flood: dropped before any parsing
            return
        link: Hashable = addr
        if not looks_like_dtls(data):
            if not is_encapsulated(data):
                self.stats["not_dtls"] += 1
                log.debug("DTLS listener: dropped a non-DTLS datagram from %s", _addr(addr))
                return
            # mqttsn.unwrap would refuse the inner DTLS record as "nested encapsulation" (0xFE at
            # byte 1 again), so decode the Encapsulated packet itself.
            try:
                packet = decode(data)
            except DecodeError as exc:
                self.stats["bad_encapsulation"] += 1
                line = f"DTLS listener: dropped datagram from {_addr(addr)}: {exc}"
                self._log_drop("bad encapsulation", line, now)
                return
            if not isinstance(packet, Encapsulated):  # pragma: no cover - is_encapsulated said so
                self.stats["bad_encapsulation"] += 1
                return
            link, data = ForwardedPeer(addr, packet.node_id), packet.inner
            if not looks_like_dtls(data):
                self.stats["not_dtls"] += 1
                log.debug("DTLS listener: relay %s forwarded a non-DTLS datagram", _addr(addr))
                return
        self.server.receive_datagram(data, link, now)
        self._process(now)

    def deliver(self, peer: DtlsPeer, plaintext: bytes, now: float) -> None:
        """Encrypt one Gateway datagram to ``peer`` (dropped, and counted, without a session)."""
        try:
            self.server.send(peer.link, plaintext)
        except NoSessionError:
            self.stats["undeliverable"] += 1
            log.debug("no DTLS session with %s: reply dropped", peer)
            return
        self._process(now)

    def close_session(self, peer: DtlsPeer, reason: str, now: float) -> None:
        """close_notify to ``peer`` and forget its DTLS session (its Gateway session ends too)."""
        try:
            self.server.close(peer.link, reason)
        except NoSessionError:
            return
        self._process(now)

    def close_all(self, reason: str = "gateway shutting down") -> int:
        """close_notify to every DTLS session (shutdown). The Gateway's sessions are not ended
        here: their nodes are not lost, the gateway is going away (no wills); GatewayServer.close
        ends them with the broker link."""
        notified = self.server.close_all(reason)
        for link, datagram in self.server.datagrams_to_send():
            self._out.append(wrap(link, datagram))
        self._events.extend(self.server.events())
        return notified

    def handle_timer(self, now: float) -> None:
        for text in self.drop_log.due(now):
            log.warning("%s", text)
        self.server.handle_timer(now)
        self._process(now)

    def get_timer(self) -> float | None:
        at = self.server.get_timer()
        summary = self.drop_log.next_deadline()
        if summary is None:
            return at
        return summary if at is None else min(at, summary)

    # --- outputs -----------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[Hashable, bytes]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ServerEvent]:
        out, self._events = self._events, []
        return out

    # --- internals ---------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        for link, datagram in self.server.datagrams_to_send():
            self._out.append(wrap(link, datagram))
        gateway = self.gateway
        for event in self.server.events():
            self._events.append(event)
            if isinstance(event, ApplicationData):
                gateway.receive_datagram(event.plaintext, DtlsPeer(event.peer), now, identity=event.device_id)
                self.gateway_touched = True
            elif isinstance(event, SessionEstablished):
                s = gateway.session(DtlsPeer(event.peer))
                if s is not None and s.identity != event.device_id:
                    self._end_gateway_session(
                        event.peer, "another device took over its DTLS peer", now, keep_sleeping=False
                    )
            elif isinstance(event, SessionClosed | HandshakeFailed | SessionRefused):
                self._end_gateway_session(event.peer, event.reason, now, keep_sleeping=True)

    def _end_gateway_session(self, link: Hashable, reason: str, now: float, *, keep_sleeping: bool) -> None:
        ended = self.gateway.transport_lost(
            DtlsPeer(link), now, f"DTLS session ended: {reason}", keep_sleeping=keep_sleeping
        )
        if ended:
            self.stats["gateway_sessions_ended"] += 1
            self.gateway_touched = True


class DtlsListener:
    """asyncio driver of a :class:`DtlsFront` on one UDP socket, attached to a GatewayServer.

    ::

        server = GatewayServer(config, broker, udp=None)          # or with a UDP listener too
        listener = DtlsListener(server, DtlsServer(DtlsServerConfig(psk=keys)), ("0.0.0.0", 5684))
        await server.start(); await listener.start()
        ...
        await listener.close(); await server.close()
    """

    peer_type = DtlsPeer

    def __init__(self, server: GatewayServer, dtls: DtlsServer, address: tuple[str, int]) -> None:
        self.server = server
        self.front = DtlsFront(dtls, server.gateway)
        self.bind_address = address
        self.observers: list[Callable[[ServerEvent], None]] = []
        self._sock: socket.socket | None = None
        self._reading = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._settle_pending = False
        server.attach(self)

    @property
    def dtls(self) -> DtlsServer:
        return self.front.server

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        """Bind the socket (OSError if it cannot) and start reading."""
        family = socket.AF_INET6 if ":" in self.bind_address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        set_socket_buffers(sock)
        try:
            sock.bind(self.bind_address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        if not self._paused:
            self.resume_reading()
        log.info("MQTT-SN gateway on dtls %s:%s", *self.address)

    def replace_psk(self, keys: Mapping[str, bytes]) -> list[str]:
        """New PSK table for new handshakes; sessions of removed/changed identities end now."""
        closed = self.front.server.replace_psk(keys)
        self.front._process(self.server.now())
        self._settle()
        return closed

    async def close(self) -> None:
        """close_notify to every node with a DTLS session, then stop listening."""
        if self._sock is not None:
            self.front.close_all()
            self._transmit()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._sock is not None:
            if self._reading:
                self.server.loop.remove_reader(self._sock.fileno())
                self._reading = False
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> DtlsListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- PeerTransport (called by GatewayServer) ---------------------------------------------

    def deliver(self, peer: Hashable, data: bytes) -> None:
        assert isinstance(peer, DtlsPeer)
        self.front.deliver(peer, data, self.server.now())
        self._transmit()

    def pause_reading(self) -> None:
        self._paused = True
        if self._reading and self._sock is not None:
            self.server.loop.remove_reader(self._sock.fileno())
        self._reading = False

    def resume_reading(self) -> None:
        self._paused = False
        if not self._reading and self._sock is not None:
            self.server.loop.add_reader(self._sock.fileno(), self._read_ready)
            self._reading = True

    # --- inputs ------------------------------------------------------------------------------

    def _read_ready(self) -> None:
        sock = self._sock
        got = False
        for _ in range(256):
            if sock is None or not self._reading:
                break
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("dtls udp error: %s", exc)
                continue
            self.front.receive_datagram(data, addr, self.server.now())
            got = True
        if got:
            self._settle()

    def datagram_received(self, data: bytes, addr: Hashable) -> None:
        """Feed one datagram as if it came off the socket (tests, other drivers)."""
        self.front.receive_datagram(data, addr, self.server.now())
        self._settle()

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = self._timer_at = None
        now = self.server.now()
        self.front.handle_timer(now if at is None else max(now, at))
        self._settle()

    # --- outputs -----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Let the Gateway answer what it was fed (its replies come back via deliver), transmit."""
        self._settle_pending = False
        if self.front.gateway_touched:
            self.front.gateway_touched = False
            self.server.flush()
        self._transmit()

    def _transmit(self) -> None:
        sock = self._sock
        for addr, datagram in self.front.datagrams_to_send():
            if sock is None:
                break
            try:
                sock.sendto(datagram, cast(tuple[Any, ...], addr))
            except OSError as exc:  # full buffer or unreachable: UDP may drop, DTLS retransmits
                self.front.stats["send_failed"] = self.front.stats.get("send_failed", 0) + 1
                log.debug("dtls udp send to %s failed: %s", addr, exc)
        events = self.front.events()
        if self.observers:
            for event in events:
                for observer in self.observers:
                    observer(event)
        if self.front.gateway_touched and not self._settle_pending:
            # A session ended while the Gateway was being flushed: flush it again, soon.
            self._settle_pending = True
            self.server.loop.call_soon(self._settle)
        when = self.front.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.server.loop.call_at(when, self._on_timer) if when is not None else None
            self._timer_at = when
