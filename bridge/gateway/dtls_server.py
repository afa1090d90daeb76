"""Sans-I/O DTLS 1.2 server endpoint table for the MQTT-SN gateway (python-mbedtls underneath).

One :class:`DtlsServer` holds every DTLS session of the gateway, keyed by *peer*: any hashable
with a stable ``repr`` — a UDP address ``(host, port)``, or ``(relay_address, wireless_node_id)``
for traffic a root relay forwarded in MQTT-SN encapsulation. It does no I/O and reads no clock::

    server = DtlsServer(DtlsServerConfig(psk=load_psk_file(path)), max_sessions=10_000,
                        idle_timeout=900.0)
    server.receive_datagram(data, peer, now)        # every datagram from the network
    server.handle_timer(now)                         # when now >= server.get_timer()
    server.send(peer, plaintext)                     # after SessionEstablished(peer, ...)
    server.close(peer)                               # close_notify + forget
    server.close_all()                               # ... to every session (shutdown)
    for peer, datagram in server.datagrams_to_send(): transmit(...)
    for event in server.events(): ...

Events (frozen dataclasses, all carry ``peer``):

* :class:`SessionEstablished` ``(peer, device_id)`` — handshake done; ``device_id`` is the PSK
  identity or the client certificate's subject CN. It is the only identity to trust.
* :class:`ApplicationData` ``(peer, device_id, plaintext)`` — one per DTLS record.
* :class:`SessionClosed` ``(peer, device_id, reason)`` — close_notify, fatal alert, idle timeout,
  reconnect from the same peer, or local close.
* :class:`HandshakeFailed` ``(peer, reason)`` — unknown identity, bad certificate, wrong key
  (client Finished never verifies → handshake deadline), retransmissions exhausted, or evicted
  from the half-open budget by a newer handshake of the same source.
* :class:`SessionRefused` ``(peer, reason)`` — ``max_sessions`` established, or no half-open
  handshake could be evicted; the client gets a fatal alert at once instead of retransmitting
  into the void.

Defences: a ClientHello without a valid cookie gets a HelloVerifyRequest from one shared,
stateless "lobby" context (nothing allocated per peer); only a verified ClientHello creates a
session, and that *half-open* handshake must fit a budget kept apart from established sessions
(caps in all / per source host / per relay, oldest of the same source evicted, per-source rate
limits before any mbedTLS work, muted addresses screened before unwrapping; returning peers
exempt): :mod:`bridge.gateway.dtls_admission`, docs/dtls.md. Records that are forged, altered or
replayed are discarded by mbedTLS (AEAD, anti-replay window), counted in ``stats["discarded"]``
and logged the 1st, 2nd, 4th, 8th... time per session.

Memory: a live mbedTLS context costs ~43-47 KiB (fixed 16 KiB record buffers plus python-mbedtls'
32 KiB rings). Established sessions beyond the ``live_contexts`` most recently used ones are
*parked*: serialised with mbedTLS' own ``mbedtls_ssl_context_save`` (~220 bytes, keys and
anti-replay window included) and restored on their next datagram (~30 µs).

Handshake retransmission timers are mbedTLS' (``handshake_timeout_min`` doubling to
``handshake_timeout_max``) clocked by ``now`` (see :mod:`wire.mbedtls_glue`).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast

from mbedtls import exceptions as mbedtls_errors
from mbedtls import tls

from bridge.gateway.dtls_admission import HandshakeAdmission, HandshakeLimits
from bridge.gateway.dtls_events import (
    ApplicationData,
    HandshakeFailed,
    NoSessionError,
    Peer,
    ServerEvent,
    SessionClosed,
    SessionEstablished,
    SessionRefused,
)
from bridge.gateway.dtls_session import (
    ESTABLISHED,
    GONE,
    HANDSHAKING,
    Lobby,
    QuietLog,
    Session,
    cookie_length,
    describe,
    dtls_configuration,
    fatal_alert,
    feed,
    hello_at,
    hello_peer,
)
from wire.dtls_credentials import DtlsServerConfig, PskLookup, device_id_from_subject
from wire.mbedtls_glue import (
    Clock,
    Step,
    bind_timer,
    drain_datagrams,
    is_client_hello,
    looks_like_dtls,
    unbind_timer,
)

__all__ = [
    "ApplicationData",
    "DtlsServer",
    "HandshakeFailed",
    "HandshakeLimits",
    "NoSessionError",
    "Peer",
    "ServerEvent",
    "SessionClosed",
    "SessionEstablished",
    "SessionRefused",
    "looks_like_dtls",
]

log = logging.getLogger("meshota.dtls")

_RTX, _HS_DEADLINE, _IDLE = 0, 1, 2
_OVER = Step.OVER
_MAX_RECORD = 16384
_ERR_CLIENT_RECONNECT = 0x6780


class DtlsServer:
    """All DTLS sessions of one gateway listener (see the module docstring)."""

    def __init__(
        self,
        config: DtlsServerConfig,
        *,
        max_sessions: int = 10_000,
        idle_timeout: float = 900.0,
        handshake_timeout: float = 15.0,
        handshake_timeout_min: float = 1.0,
        handshake_timeout_max: float = 60.0,
        live_contexts: int = 256,
        mtu: int = 1200,
        limits: HandshakeLimits | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_sessions < 1 or live_contexts < 1:
            raise ValueError("max_sessions and live_contexts must be at least 1")
        if not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be > 0")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.live_contexts = live_contexts
        self.mtu = mtu
        self._log = logger or log
        self._quiet = QuietLog(self._log)
        self.admission = HandshakeAdmission(limits or HandshakeLimits(known_peers=max_sessions))
        self._psk = PskLookup(config.psk) if config.psk is not None else None
        self._context = tls.ServerContext(
            dtls_configuration(config, self._psk, handshake_timeout_min, handshake_timeout_max)
        )
        self._clock = Clock()
        self._sessions: dict[Peer, Session] = {}
        self._live: OrderedDict[Peer, None] = OrderedDict()  # established, unparked, LRU first
        self._heap: list[tuple[float, int, int, Session]] = []
        self._seq = 0
        self._out: list[tuple[Peer, bytes]] = []
        self._events: list[ServerEvent] = []
        self._scratch = bytearray(_MAX_RECORD)
        self._lobby = Lobby(self._context, self._clock, mtu)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "hello_verify_sent",
                "dropped",
                "refused",
                "rate_limited",
                "evicted",
                "established",
                "failed",
                "closed",
                "parked",
                "restored",
                "discarded",
            ),
            0,
        )

    # --- public API --------------------------------------------------------------------------

    @property
    def session_count(self) -> int:
        """Sessions of every state: established (live or parked) and half-open handshakes."""
        return len(self._sessions)

    @property
    def handshake_count(self) -> int:
        """Half-open handshakes (a verified cookie, no client Finished yet)."""
        return self.admission.half_open

    def device_id(self, peer: Peer) -> str | None:
        """The verified device id of an established session, else None."""
        s = self._sessions.get(peer)
        return s.device_id if s is not None and s.state == ESTABLISHED else None

    def screen(self, data: bytes, addr: Peer, now: float) -> bool:
        """True: drop this datagram from UDP address ``addr`` unread — a ClientHello (direct or
        in forwarder encapsulation) from an address that is over its ClientHello rate, from a peer
        that never completed a handshake here. Call before unwrapping: a dict look-up when
        nothing is muted, a few byte compares per flood datagram when something is."""
        adm = self.admission
        if not adm.muted or not adm.is_muted(addr, now):
            return False
        hello, _ = hello_at(data, addr)
        if not hello:
            return False
        if addr in adm.vouched:  # it carries returning peers: is this one of them?
            peer = hello_peer(data, addr)
            if adm.is_known(peer) or peer in self._sessions:
                return False
        elif addr in self._sessions:  # a direct peer retransmitting into its own handshake
            return False
        self.stats["rate_limited"] += 1
        return True

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        """Process one datagram from ``peer``; never raises for anything the peer sent."""
        self._clock.now = now
        data = bytes(data)
        s = self._sessions.get(peer)
        if s is None:
            if is_client_hello(data):
                self._lobby_receive(data, peer, now)
            else:
                self.stats["dropped"] += 1
            return
        if s.state == HANDSHAKING:
            self._feed(s, data)
            self._pump_handshake(s)
            return
        if not self._ensure_live(s):
            return
        self._feed(s, data)
        seen = len(self._events)
        reconnect = self._read_records(s, now)
        if data[:1] == b"\x17" and len(self._events) == seen:  # application data, nothing read
            self.stats["discarded"] += 1
            s.note_discarded(self._log)
        if reconnect and is_client_hello(data):
            self._lobby_receive(data, peer, now)
        elif len(self._live) > self.live_contexts:
            self._enforce_live_limit()

    def send(self, peer: Peer, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` to ``peer`` (one record per call when it fits the MTU)."""
        s = self._sessions.get(peer)
        if s is None or s.state != ESTABLISHED:
            raise NoSessionError(f"no established DTLS session with {peer!r}")
        if not plaintext or not self._ensure_live(s):
            return
        assert s.buf is not None
        try:
            s.buf.write(plaintext)
        except mbedtls_errors.TLSError as exc:
            self._close(s, f"write failed: {describe(exc)}")
            return
        self._flush(s)
        self._touch(s)

    def close(self, peer: Peer, reason: str = "closed by gateway") -> None:
        """Send close_notify to ``peer`` and forget the session (SessionClosed follows)."""
        s = self._sessions.get(peer)
        if s is None:
            raise NoSessionError(f"no DTLS session with {peer!r}")
        if s.state == ESTABLISHED and self._ensure_live(s):
            assert s.buf is not None
            with contextlib.suppress(mbedtls_errors.TLSError):
                s.buf.shutdown()
            self._flush(s)
        self._close(s, reason)

    def replace_psk(self, keys: Mapping[str, bytes]) -> list[str]:
        """Use ``keys`` for every handshake from now on (a reloaded PSK file). A session whose PSK
        identity is gone or has another key now gets close_notify and ends (a revoked device is
        cut off at once, not at its next handshake); the others go on. Returns the identities
        whose sessions were closed. ValueError if this server was not configured for PSK."""
        if self._psk is None:
            raise ValueError("this DTLS server has no PSK table to replace")
        old = dict(self._psk.keys_snapshot())
        self._psk.replace(keys)
        changed = {identity for identity, key in old.items() if keys.get(identity) != key}
        closed = []
        for s in list(self._sessions.values()):
            if s.psk_identity is not None and s.psk_identity in changed:
                closed.append(s.psk_identity)
                self.admission.forget(s.peer)
                if s.state == ESTABLISHED:
                    self.close(s.peer, "PSK revoked or changed")
                else:
                    self._close(s, "PSK revoked or changed")
        self._log.info("DTLS: PSK table replaced: %d identities, %d sessions closed", len(keys), len(closed))
        return closed

    def close_all(self, reason: str = "gateway shutting down") -> int:
        """close_notify to every established session and forget every session (a gateway that
        stops: nodes learn it at once instead of through MQTT-SN retries). Parked sessions are
        restored one at a time to sign their close_notify, after the live ones are gone, so none
        is parked again. Handshakes in progress end as HandshakeFailed. Returns how many sessions
        got a close_notify."""
        notified = 0
        live = [self._sessions[p] for p in self._live if p in self._sessions]
        rest = [s for s in self._sessions.values() if s.peer not in self._live]
        for s in live + rest:
            if s.state == HANDSHAKING:
                self.stats["failed"] += 1
                self._drop(s)
                self._events.append(HandshakeFailed(s.peer, reason))
                continue
            if s.state == ESTABLISHED and self._ensure_live(s):
                assert s.buf is not None
                with contextlib.suppress(mbedtls_errors.TLSError):
                    s.buf.shutdown()
                self._flush(s)
                notified += 1
            self.stats["closed"] += 1
            self._drop(s)
            self._events.append(SessionClosed(s.peer, s.device_id, reason))
        self._log.info("DTLS: close_notify sent to %d sessions (%s)", notified, reason)
        return notified

    def datagrams_to_send(self) -> list[tuple[Peer, bytes]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ServerEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, kind, s = heap[0]
            due = self._due(s, kind)
            if due == deadline:
                return deadline
            heapq.heappop(heap)
            if due is not None and due > deadline:
                self._schedule(s, kind, due)
        return None

    def handle_timer(self, now: float) -> None:
        self._clock.now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, kind, s = heapq.heappop(heap)
            due = self._due(s, kind)
            if due is None:
                continue
            if due > now:
                if due != deadline or kind == _IDLE:
                    self._schedule(s, kind, due)
                continue
            if kind == _RTX:
                self._pump_handshake(s)
            elif kind == _HS_DEADLINE:
                hint = ""
                assert s.buf is not None
                if s.buf._handshake_state is Step.CLIENT_FINISHED:
                    hint = " (client Finished never verified: wrong key?)"
                self._fail(s, f"handshake not completed within {self.handshake_timeout:g} s{hint}")
            else:
                self._close(s, f"idle for {self.idle_timeout:g} s")

    # --- admission: stateless cookie exchange, then the half-open budget ---------------------

    def _lobby_receive(self, data: bytes, peer: Peer, now: float) -> None:
        adm = self.admission
        if not (adm.allow_attempt(peer, now) if cookie_length(data) else adm.allow_hello(peer, now)):
            self.stats["rate_limited"] += 1
            adm.mute(peer, now)
            self._quiet.warning("rate", "DTLS: ClientHello over its source's rate dropped (%r)", peer)
            return
        verified, out = self._lobby.check(data, peer)
        if not verified:
            if out:
                self.stats["hello_verify_sent"] += 1
                self._out.extend((peer, d) for d in out)
            else:
                self.stats["dropped"] += 1
            return
        # The client receives at its address. Room for one more half-open handshake?
        if len(self._sessions) - adm.half_open >= self.max_sessions:
            reason: str | None = f"session table full ({self.max_sessions} sessions)"
        else:
            reason = adm.admit(peer, self._evict)
        if reason is not None:
            self._quiet.warning("refused", "DTLS: refused %r: %s", peer, reason)
            self.stats["refused"] += 1
            self._lobby.refuse()
            self._out.append((peer, fatal_alert(data)))
            self._events.append(SessionRefused(peer, reason))
            return
        # A verified ClientHello: the lobby context becomes this peer's session.
        buf, timer, key = self._lobby.take()
        s = Session(peer, buf, timer)
        s.timer_key = key
        s.timer.on_change = lambda deadline, s=s: self._on_rtx_change(s, deadline)
        s.last_activity = now
        self._sessions[peer] = s
        adm.add(peer)
        self._schedule(s, _HS_DEADLINE, now + self.handshake_timeout)
        self._pump_handshake(s)

    def _evict(self, peer: Peer, reason: str) -> None:
        """End a half-open handshake to make room for a newer one (HandshakeFailed follows)."""
        s = self._sessions.get(peer)
        if s is None or s.state != HANDSHAKING:  # pragma: no cover - admission tracks only these
            self.admission.remove(peer)
            return
        self.stats["evicted"] += 1
        self.stats["failed"] += 1
        self._quiet.warning("evicted", "DTLS: evicted half-open handshake %r: %s", peer, reason)
        self._drop(s)
        self._events.append(HandshakeFailed(peer, f"evicted: {reason}"))

    def _feed(self, s: Session, data: bytes) -> None:
        assert s.buf is not None
        feed(s.buf, data)

    def _flush(self, s: Session) -> None:
        assert s.buf is not None
        for datagram in drain_datagrams(s.buf, self.mtu):
            self._out.append((s.peer, datagram))

    def _pump_handshake(self, s: Session) -> None:
        buf = s.buf
        assert buf is not None
        psk = self._psk
        for _ in range(64):
            if buf._handshake_state is _OVER:
                break
            if psk is not None:
                psk.seen = None
            try:
                buf.do_handshake()
            except tls.WantWriteError:
                pass
            except (tls.WantReadError, tls.HelloVerifyRequest):
                break
            except mbedtls_errors.TLSError as exc:
                self._flush(s)  # the fatal alert mbedTLS wrote, if any
                reason = describe(exc)
                identity = psk.seen if psk is not None and psk.seen else s.device_id
                if identity is not None:
                    reason += f" (PSK identity {identity!r})"
                self._fail(s, reason)
                return
            finally:
                if psk is not None and psk.seen is not None and psk.seen in psk:
                    s.device_id = s.psk_identity = psk.seen
        self._flush(s)
        if buf._handshake_state is _OVER:
            self._established(s)

    def _established(self, s: Session) -> None:
        assert s.buf is not None
        if s.device_id is None:  # certificate handshake: the subject CN is the device id
            cert = s.buf.getpeercert(binary_form=False)
            subject = getattr(cert, "subject", None)
            s.device_id = device_id_from_subject(subject) if subject else None
            if s.device_id is None:
                with contextlib.suppress(mbedtls_errors.TLSError):
                    s.buf.shutdown()
                self._flush(s)
                self._fail(s, f"no usable device id in the client certificate subject {subject!r}")
                return
        s.state = ESTABLISHED
        self.admission.remove(s.peer)
        self.admission.remember(s.peer)
        s.timer.deadline = None
        s.last_activity = self._clock.now
        self.stats["established"] += 1
        self._log.info("DTLS: %r established as device %r (%s)", s.peer, s.device_id, s.buf.cipher())
        self._events.append(SessionEstablished(s.peer, s.device_id))
        self._live[s.peer] = None
        self._schedule(s, _IDLE, s.last_activity + self.idle_timeout)
        self._read_records(s, s.last_activity)
        self._enforce_live_limit()

    def _read_records(self, s: Session, now: float) -> bool:
        """Decrypt what was fed; True when the peer started a new handshake (reconnect)."""
        buf, scratch = s.buf, self._scratch
        assert buf is not None and s.device_id is not None
        got_data = False
        while True:
            try:
                n = buf.readinto(scratch, len(scratch))  # type: ignore[arg-type]
            except tls.WantReadError:
                break
            except tls.WantWriteError:
                continue
            except mbedtls_errors.TLSError as exc:
                self._flush(s)
                if getattr(exc, "err", 0) == _ERR_CLIENT_RECONNECT:
                    self._close(s, "client started a new handshake")
                    return True
                self._close(s, describe(exc))
                return False
            got_data = True
            self._events.append(ApplicationData(s.peer, s.device_id, bytes(scratch[:n])))
        self._flush(s)  # e.g. our last flight again, or a HelloVerifyRequest to a reconnect
        if got_data:
            s.last_activity = now
        self._touch(s)
        return False

    def _fail(self, s: Session, reason: str) -> None:
        if s.device_id is None and not self.admission.is_known(s.peer):  # nobody we know: quietly
            self._quiet.warning("failed", "DTLS: handshake with %r failed: %s", s.peer, reason)
        else:
            self._log.warning("DTLS: handshake with %r failed: %s", s.peer, reason)
        self.stats["failed"] += 1
        self._drop(s)
        self._events.append(HandshakeFailed(s.peer, reason))

    def _close(self, s: Session, reason: str) -> None:
        if s.state == HANDSHAKING:
            self._fail(s, reason)
            return
        self._log.info("DTLS: session %r (device %r) closed: %s", s.peer, s.device_id, reason)
        self.stats["closed"] += 1
        self._drop(s)
        self._events.append(SessionClosed(s.peer, s.device_id, reason))

    def _drop(self, s: Session) -> None:
        if s.state == HANDSHAKING and self._sessions.get(s.peer) is s:
            self.admission.remove(s.peer)
        s.state = GONE
        unbind_timer(s.timer_key, s.timer)
        s.buf = None
        s.parked = None
        self._live.pop(s.peer, None)
        if self._sessions.get(s.peer) is s:
            del self._sessions[s.peer]

    # --- parking (context serialisation) -----------------------------------------------------

    def _touch(self, s: Session) -> None:
        if s.peer in self._live:
            self._live.move_to_end(s.peer)

    def _ensure_live(self, s: Session) -> bool:
        if s.buf is not None:
            return True
        assert s.parked is not None
        buf = tls.TLSWrappedBuffer.__new__(tls.TLSWrappedBuffer)
        try:
            buf.__setstate__(  # type: ignore[attr-defined]
                {"connection": s.parked, "context": self._context, "server_hostname": None}
            )
        except (TypeError, mbedtls_errors.TLSError) as exc:
            self._close(s, f"could not restore parked session: {exc}")
            return False
        buf.setmtu(self.mtu)
        buf.setcookieparam(repr(s.peer).encode())  # for reconnect detection by mbedTLS
        s.timer_key = bind_timer(buf, s.timer)
        s.buf, s.parked = buf, None
        self.stats["restored"] += 1
        self._live[s.peer] = None
        self._enforce_live_limit()
        return True

    def _enforce_live_limit(self) -> None:
        attempts = 4
        live = self._live
        while len(live) > self.live_contexts and attempts:
            peer = next(iter(live))
            s = self._sessions[peer]
            assert s.buf is not None
            try:  # fails while mbedTLS still keeps our last flight (no data from the client yet)
                state = cast(dict[str, Any], s.buf.__getstate__())
            except TypeError:
                live.move_to_end(peer)
                attempts -= 1
                continue
            unbind_timer(s.timer_key, s.timer)
            s.parked, s.buf = state["connection"], None
            del live[peer]
            self.stats["parked"] += 1

    # --- timers ------------------------------------------------------------------------------

    def _schedule(self, s: Session, kind: int, deadline: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, kind, s))

    def _on_rtx_change(self, s: Session, deadline: float | None) -> None:
        if deadline is not None and s.state == HANDSHAKING:
            self._schedule(s, _RTX, deadline)

    def _due(self, s: Session, kind: int) -> float | None:
        """When timer ``kind`` of ``s`` really fires now (None: no longer relevant)."""
        if s.state == GONE:
            return None
        if kind == _RTX:
            return s.timer.deadline if s.state == HANDSHAKING else None
        if kind == _HS_DEADLINE:
            return s.last_activity + self.handshake_timeout if s.state == HANDSHAKING else None
        return s.last_activity + self.idle_timeout if s.state == ESTABLISHED else None
