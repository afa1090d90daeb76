"""asyncio driver of the sans-I/O MQTT-SN gateway over UDP, with the broker side in BrokerLink.

Everything protocol-shaped lives in :class:`mqttsn.Gateway`; this file only moves datagrams,
runs broker actions, arms one timer and logs events. Flow control: the UDP socket gets large
kernel buffers, and reading pauses while the broker link holds too many unsent or unconfirmed
packets, so a burst waits in the kernel buffer instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.gateway.broker_link import BrokerAnswers, BrokerLink
from bridge.gateway.log_limit import DEFAULT_INTERVAL, DropLog, kind_of
from mqttsn import (
    BROADCAST,
    ClientLost,
    DatagramDropped,
    DecodeError,
    Gateway,
    GatewayConfig,
    GatewayEvent,
    PacketRefused,
    unwrap,
    wrap,
)

__all__ = ["GatewayServer", "PeerTransport", "set_socket_buffers"]

log = logging.getLogger("meshota.gateway")

SOCKET_BUFFER = 8 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def set_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> int:
    """Enlarge a UDP socket's kernel buffers (past rmem_max when privileged); return the rcvbuf."""
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


@dataclass(slots=True)
class _Backpressure:
    high: int = 2000
    low: int = 500
    paused: bool = False


class PeerTransport(Protocol):
    """Another listener sharing this server's Gateway (e.g. the DTLS one, bridge.gateway.dtls_listener).

    Its Gateway peers are instances of ``peer_type``; replies to them go to ``deliver``. It feeds
    the Gateway itself and then calls :meth:`GatewayServer.flush`.
    """

    @property
    def peer_type(self) -> type: ...

    def deliver(self, peer: Hashable, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class MulticastError(OSError):
    """The multicast group cannot be joined (not IPv4 multicast, no such interface, port taken)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "multicast error"


class GatewayServer:
    """One UDP socket (optional), one Gateway, one BrokerLink; more listeners may attach."""

    def __init__(
        self,
        config: GatewayConfig,
        broker: tuple[str, int],
        udp: tuple[str, int] | None,
        *,
        broker_username: str | None = None,
        broker_password: str | None = None,
        multicast: tuple[str, int] | None = None,
        multicast_interface: str | None = None,
        max_broker_connecting: int = 64,
        drop_log_interval: float = DEFAULT_INTERVAL,
        client_id: str = "meshota-gateway",
        session_expiry: int = 86400,
        broker_client: str = "mqtt5",
        tenant_of: Callable[[str], str | None] | None = None,
        tenant_passwords: Mapping[str, str] | None = None,
    ) -> None:
        self.gateway = Gateway(config)
        # drop/refusal warnings: first of a kind at once, then one summary line per interval
        self.drop_log = DropLog(drop_log_interval)
        self._drop_log_timer: asyncio.TimerHandle | None = None
        self.udp = udp
        self.multicast = multicast
        # the interface (its IPv4 address) ADVERTISE leaves by and the group is joined on;
        # default: the --udp address when it names one, else the kernel's choice
        self.multicast_interface = multicast_interface
        self._msock: socket.socket | None = None
        link_type: type[BrokerLink] = BrokerLink
        if broker_client == "aiomqtt":  # the former link, only as a benchmark baseline
            from bridge.gateway.broker_link_aiomqtt import AiomqttBrokerLink

            link_type = AiomqttBrokerLink  # type: ignore[assignment]
        self.link = link_type(
            broker[0],
            broker[1],
            BrokerAnswers(
                connected=self._on_connected,
                published=self._on_published,
                subscribed=self._on_subscribed,
                unsubscribed=self._on_unsubscribed,
                message=self._on_message,
                lost=self._on_lost,
            ),
            gateway_client_id=client_id,
            username=broker_username,
            password=broker_password,
            max_connecting=max_broker_connecting,
            # aggregating mode: the gateway's own session carries every node's subscriptions and
            # what is in flight to them, so it outlives a gateway restart
            persistent=config.mode == "aggregating",
            session_expiry=session_expiry,
        )
        if tenant_of is not None:  # organisations (docs/topics.md): identity -> organisation id
            self.link.tenant_of = tenant_of
            self.link.tenant_passwords = tenant_passwords or {}
        self._sock: socket.socket | None = None
        self._reading = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._bp = _Backpressure()
        self._bp_task: asyncio.Task[None] | None = None
        self._transports: dict[type, PeerTransport] = {}
        self._flush_pending = False
        self.loop = asyncio.get_event_loop()

    def broker_ready(self) -> bool:
        """``/readyz``: the gateway's own broker connection is up."""
        ready = getattr(self.link, "gateway_connected", None)
        return bool(ready()) if ready is not None else True

    def attach(self, transport: PeerTransport) -> None:
        """Route the Gateway's datagrams for ``transport.peer_type`` peers to ``transport``."""
        self._transports[transport.peer_type] = transport

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    def now(self) -> float:
        return self.loop.time()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.link.start()
        if self.udp is not None:
            family = socket.AF_INET6 if ":" in self.udp[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            set_socket_buffers(sock)
            try:
                sock.bind(self.udp)
            except OSError:
                sock.close()
                await self.link.close()
                raise
            sock.setblocking(False)
            self._sock = sock
            if self.multicast is not None:
                try:
                    self._join_multicast(sock, self.multicast)
                except OSError:
                    sock.close()
                    self._sock = None
                    await self.link.close()
                    raise
            self._resume_reading()
            log.info("MQTT-SN gateway on udp %s:%s, mode %s", *self.address, self.gateway.config.mode)
        self.gateway.start(self.now())
        self._flush()

    def _join_multicast(self, sock: socket.socket, group: tuple[str, int]) -> None:
        """Hear SEARCHGW sent to ``group`` (a second socket bound to it, the group joined) and
        send ADVERTISE there from the unicast socket, so GWINFO/CONNECT come back to it."""
        iface = self.multicast_interface
        if iface is None:
            host = sock.getsockname()[0]
            iface = host if host not in ("0.0.0.0", "") else "0.0.0.0"
        if sock.family != socket.AF_INET:
            raise MulticastError(f"{group[0]}: only IPv4 groups are supported (an IPv4 --udp address)")
        if iface != "0.0.0.0":
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        msock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            msock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            msock.bind(group)  # bound to the group address: only datagrams sent to the group
            mreq = socket.inet_aton(group[0]) + socket.inet_aton(iface)
            msock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            msock.setblocking(False)
        except OSError as exc:
            msock.close()
            raise MulticastError(
                f"{group[0]}:{group[1]} on interface {iface}: {exc.strerror or exc}"
            ) from None
        self._msock = msock
        log.info("MQTT-SN gateway listening for SEARCHGW on multicast %s:%s (interface %s)", *group, iface)

    def _multicast_ready(self) -> None:
        msock = self._msock
        for _ in range(64):
            if msock is None:
                return
            try:
                data, addr = msock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("multicast udp error: %s", exc)
                continue
            # answered from the unicast socket (GWINFO's source address is the gateway's address)
            self.datagram_received(data, addr)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._drop_log_timer is not None:
            self._drop_log_timer.cancel()
            self._drop_log_timer = None
        for line in self.drop_log.due(float("inf")):
            log.warning("%s", line)
        if self._bp_task is not None:
            self._bp_task.cancel()
        if self._msock is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self._msock.fileno())
            self._msock.close()
            self._msock = None
        if self._sock is not None:
            self._pause_reading()
            self._sock.close()
            self._sock = None
        await self.link.close()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- inputs -----------------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if self._reading and self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            if self._msock is not None:
                self.loop.remove_reader(self._msock.fileno())
        self._reading = False
        for transport in self._transports.values():
            transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._reading and self._sock is not None:
            self.loop.add_reader(self._sock.fileno(), self._read_ready)
            if self._msock is not None:
                self.loop.add_reader(self._msock.fileno(), self._multicast_ready)
            self._reading = True
        for transport in self._transports.values():
            transport.resume_reading()

    def _read_ready(self) -> None:
        # Drain up to a batch per wake-up, and flush the gateway's outputs once for the batch:
        # one event-loop turn (or one flush) per datagram costs more than the protocol work.
        sock = self._sock
        try:
            for _ in range(256):
                if sock is None or not self._reading:
                    return
                try:
                    data, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                    log.debug("udp error: %s", exc)
                    continue
                self._datagram_in(data, addr)
        finally:
            self._flush()

    def _datagram_in(self, data: bytes, addr: Hashable) -> None:
        try:
            peer, inner = unwrap(data, addr)
        except DecodeError as exc:
            self.gateway.stats["dropped"] = self.gateway.stats.get("dropped", 0) + 1
            line = f"dropped datagram from {addr}: malformed encapsulation: {exc}"
            self.log_drop("malformed encapsulation", line)
            return
        self.gateway.receive_datagram(inner, peer, self.now())

    def datagram_received(self, data: bytes, addr: Hashable) -> None:
        self._datagram_in(data, addr)
        self._flush()

    def _on_connected(self, conn: Hashable, ok: bool) -> None:
        self.gateway.broker_connected(conn, ok, self.now())
        self._flush()

    def _on_published(self, conn: Hashable, token: int) -> None:
        self.gateway.broker_published(conn, token, self.now())
        self._flush_soon()

    def _on_subscribed(self, conn: Hashable, token: int, granted: int) -> None:
        self.gateway.broker_subscribed(conn, token, granted, self.now())
        self._flush()

    def _on_unsubscribed(self, conn: Hashable, token: int) -> None:
        self.gateway.broker_unsubscribed(conn, token, self.now())
        self._flush()

    def _on_message(
        self, conn: Hashable, topic: str, payload: bytes, qos: int, retain: bool, ack: Hashable | None
    ) -> None:
        self.gateway.broker_message(conn, topic, payload, qos, retain, self.now(), ack)
        self._flush_soon()

    def _on_lost(self, conn: Hashable) -> None:
        self.gateway.broker_connection_lost(conn, self.now())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.gateway.handle_timer(self.now())
        self._flush()

    # --- outputs ----------------------------------------------------------------------------------

    def _flush_soon(self) -> None:
        """Flush once at the end of this event-loop turn: the broker's answers come in batches
        (every packet one read brought), and each needs no flush of its own."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def flush(self) -> None:
        """Send what the Gateway queued, run its broker actions, log its events, re-arm its timer."""
        self._flush()

    def _flush(self) -> None:
        self._flush_pending = False
        gw = self.gateway
        sock = self._sock
        transports = self._transports
        for peer, data in gw.datagrams_to_send():
            if transports:
                transport = transports.get(type(peer))
                if transport is not None:
                    transport.deliver(peer, data)
                    continue
            if sock is None:
                continue
            if peer is BROADCAST:
                if self.multicast is None:
                    continue
                addr: Any = self.multicast
            else:
                addr, data = wrap(peer, data)
            try:
                sock.sendto(data, addr)
            except OSError as exc:  # full send buffer or unreachable: UDP may drop, we count
                gw.stats["send_failed"] = gw.stats.get("send_failed", 0) + 1
                log.debug("udp send to %s failed: %s", addr, exc)
        for action in gw.broker_actions():
            self.link.run(action)
        for event in gw.events():
            self._log_event(event)
        when = gw.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._on_timer) if when is not None else None
            self._timer_at = when
        self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        if self._bp.paused or self.link.backlog_hint() <= self._bp.high:
            return
        self._bp.paused = True
        self._pause_reading()
        self._bp_task = asyncio.ensure_future(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        while self.link.outgoing_backlog() > self._bp.low:
            await asyncio.sleep(0.001)
        self._bp.paused = False
        self._resume_reading()

    def log_drop(self, kind: str, line: str) -> None:
        """Log a drop or refusal, rate-limited per kind (see bridge.gateway.log_limit)."""
        for text in self.drop_log.record(kind, line, self.now()):
            log.warning("%s", text)
        self._arm_drop_log()

    def _arm_drop_log(self) -> None:
        when = self.drop_log.next_deadline()
        if when is None or self._drop_log_timer is not None:
            return
        self._drop_log_timer = self.loop.call_at(when, self._on_drop_log_timer)

    def _on_drop_log_timer(self) -> None:
        self._drop_log_timer = None
        for text in self.drop_log.due(self.now()):
            log.warning("%s", text)
        self._arm_drop_log()

    def _log_event(self, event: GatewayEvent) -> None:
        if isinstance(event, DatagramDropped):
            line = f"dropped datagram from {event.peer}: {event.reason}"
            self.log_drop(f"dropped {kind_of(event.reason)}", line)
        elif isinstance(event, PacketRefused):
            line = f"refused packet from {event.peer} ({event.client_id}): {event.reason}"
            self.log_drop(f"refused {kind_of(event.reason)}", line)
        elif isinstance(event, ClientLost):
            log.info(
                "client %s at %s lost (%s); will %s",
                event.client_id,
                event.peer,
                event.reason,
                "published" if event.will_published else "none",
            )
        else:
            log.debug("%s", event)
