"""Per-session state and small helpers of :class:`~bridge.gateway.dtls_server.DtlsServer`.

Split out of ``dtls_server.py``: the mbedTLS configuration, the session record, the
cookie-checking lobby context, the handshake failure reasons, the one hand-built alert, a peek at
a ClientHello's cookie length (to charge the right rate limit before mbedTLS parses it) and a log
limiter so a flood cannot flood the log.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from mbedtls import exceptions as mbedtls_errors
from mbedtls import tls

from bridge.gateway.dtls_events import Peer
from mqttsn import ForwardedPeer, is_encapsulated
from wire.dtls_credentials import DtlsServerConfig, PskLookup
from wire.mbedtls_glue import (
    ECDSA_CIPHERS,
    PSK_CIPHERS,
    RECORD_HEADER_SIZE,
    Clock,
    RetransmitTimer,
    Step,
    bind_timer,
    describe_tls_error,
    drain_datagrams,
    unbind_timer,
)

__all__ = [
    "Lobby",
    "QuietLog",
    "Session",
    "cookie_length",
    "describe",
    "dtls_configuration",
    "fatal_alert",
    "feed",
    "hello_at",
    "hello_peer",
]

HANDSHAKING, ESTABLISHED, GONE = 0, 1, 2

_REASONS = {
    0x7880: "peer sent close_notify",
    0x7780: "peer sent a fatal alert",
    0x6800: "handshake timed out (retransmissions exhausted)",
    0x6C80: "unknown PSK identity",
    0x2700: "client certificate not valid for our CA",
    0x7A00: "no client certificate",
    0x7380: "peer proposed no shared cipher suite",
    0x7180: "client Finished did not verify (wrong key?)",
}


def dtls_configuration(
    config: DtlsServerConfig, psk: PskLookup | None, hs_min: float, hs_max: float
) -> tls.DTLSConfiguration:
    """DTLS 1.2 only, AEAD suites only, anti-replay on; PSK and/or ECDSA certificates."""
    ciphers: tuple[str, ...] = ()
    extra: dict[str, Any] = {}
    if psk is not None:
        ciphers += PSK_CIPHERS
        extra["pre_shared_key_store"] = psk
    if config.certificate is not None:
        ciphers += ECDSA_CIPHERS
        extra["certificate_chain"] = (config.certificate.chain, config.certificate.key)
        extra["trust_store"] = tls.TrustStore(list(config.certificate.ca))
    return tls.DTLSConfiguration(
        ciphers=ciphers,
        validate_certificates=config.certificate is not None,
        lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
        highest_supported_version=tls.DTLSVersion.DTLSv1_2,
        anti_replay=True,
        handshake_timeout_min=hs_min,
        handshake_timeout_max=hs_max,
        **extra,
    )


def describe(exc: mbedtls_errors.TLSError) -> str:
    return describe_tls_error(exc, _REASONS)


def fatal_alert(client_hello: bytes) -> bytes:
    """An epoch-0 fatal internal_error alert answering ``client_hello``.

    The one record built here by hand: python-mbedtls cannot send an alert before the handshake
    is over. Like a HelloVerifyRequest it reuses the ClientHello's record sequence number.
    """
    return b"\x15\xfe\xfd" + client_hello[3:11] + b"\x00\x02\x02\x50"


def hello_at(data: bytes, addr: Hashable) -> tuple[bool, Hashable]:
    """``(is a ClientHello, its peer)`` for a datagram from UDP address ``addr``: the peer is
    ``addr``, or ``ForwardedPeer(addr, node id)`` for a record in forwarder encapsulation (made
    only when asked for, by :func:`hello_peer`). Slices, no decoding: this runs for every
    datagram from a muted address."""
    if is_encapsulated(data):
        end = data[0]
        if end == 1:  # 3-byte length form: never used for a DTLS record; let the parser judge
            return False, addr
        return _is_hello_at(data, end), addr
    return _is_hello_at(data, 0), addr


def _is_hello_at(data: bytes, i: int) -> bool:
    return (
        len(data) > i + RECORD_HEADER_SIZE + 12
        and data[i] == 22
        and data[i + 3] == 0
        and data[i + 4] == 0
        and data[i + RECORD_HEADER_SIZE] == 1
    )


def hello_peer(data: bytes, addr: Hashable) -> Hashable:
    """The peer a ClientHello accepted by :func:`hello_at` came from."""
    return ForwardedPeer(addr, bytes(data[3 : data[0]])) if is_encapsulated(data) else addr


def cookie_length(client_hello: bytes) -> int:
    """The cookie length a ClientHello record claims (0 when it has none or is too short).

    Only read to pick which rate limit a ClientHello is charged to before mbedTLS looks at it;
    mbedTLS alone decides whether the cookie is valid. Layout after the 13-byte record header and
    12-byte handshake header: client_version(2) random(32) session_id(1+n) cookie(1+m).
    """
    i = RECORD_HEADER_SIZE + 12 + 34
    if len(client_hello) <= i:
        return 0
    i += 1 + client_hello[i]
    return client_hello[i] if len(client_hello) > i else 0


class QuietLog:
    """Warnings of one kind logged the 1st, 2nd, 4th, 8th... time (with the running count), so a
    flood of bad handshakes costs a few log lines, not one per datagram."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.counts: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n & (n - 1) == 0:
            self.log.warning(msg + " (%d so far)", *args, n)


class Session:
    __slots__ = (
        "buf",
        "device_id",
        "discarded",
        "last_activity",
        "parked",
        "peer",
        "psk_identity",
        "state",
        "timer",
        "timer_key",
    )

    def __init__(self, peer: Peer, buf: tls.TLSWrappedBuffer, timer: RetransmitTimer) -> None:
        self.peer = peer
        self.buf: tls.TLSWrappedBuffer | None = buf
        self.timer = timer
        self.timer_key = 0
        self.state = HANDSHAKING
        self.device_id: str | None = None
        self.psk_identity: str | None = None  # set when the handshake used a PSK
        self.last_activity = 0.0
        self.parked: bytes | None = None
        self.discarded = 0

    def note_discarded(self, log: logging.Logger) -> None:
        """An application-data datagram mbedTLS dropped: forged, altered or replayed."""
        self.discarded += 1
        n = self.discarded
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: a flood cannot flood the log
            log.warning(
                "DTLS: discarded a record from %r (device %r) that failed authentication or the "
                "replay check (%d so far)",
                self.peer,
                self.device_id,
                n,
            )


def feed(buf: tls.TLSWrappedBuffer, data: bytes) -> None:
    """Hand one datagram to mbedTLS, alone."""
    inbuf = buf._input_buffer  # a rejected datagram's leftovers must not merge with this one
    if not inbuf.empty():  # type: ignore[attr-defined]
        inbuf.clear()  # type: ignore[attr-defined]
    buf.receive_from_network(data)


_BEFORE_COOKIE = frozenset((Step.HELLO_REQUEST, Step.CLIENT_HELLO, Step.SERVER_HELLO, Step.HELLO_VERIFY_SENT))


class Lobby:
    """The one shared mbedTLS context that answers ClientHellos from peers without a session.

    A ClientHello without a valid cookie gets a HelloVerifyRequest (stateless: the cookie is an
    HMAC over the peer and a timestamp; nothing is kept per peer). A ClientHello whose cookie
    verifies leaves the context past ServerHello: :meth:`take` hands it over as that peer's
    session (a fresh lobby context replaces it), :meth:`refuse` discards what it began.
    """

    def __init__(self, context: tls.ServerContext, clock: Clock, mtu: int) -> None:
        self._context, self._clock, self._mtu = context, clock, mtu
        self.buf, self.timer, self.key = self._new_buffer()

    def _new_buffer(self) -> tuple[tls.TLSWrappedBuffer, RetransmitTimer, int]:
        buf = self._context.wrap_buffers()
        buf.setmtu(self._mtu)
        timer = RetransmitTimer(self._clock)
        return buf, timer, bind_timer(buf, timer)

    def check(self, data: bytes, peer: Peer) -> tuple[bool, list[bytes]]:
        """``(True, [])`` for a ClientHello with a valid cookie (then :meth:`take` or
        :meth:`refuse`); else ``(False, datagrams)``: the HelloVerifyRequest, or nothing."""
        lobby = self.buf
        lobby.setcookieparam(repr(peer).encode())
        feed(lobby, data)
        for _ in range(8):
            try:
                lobby.do_handshake()
            except tls.WantWriteError:
                pass
            except (tls.HelloVerifyRequest, tls.WantReadError, mbedtls_errors.TLSError):
                break
            # ServerHello written (not a HelloVerifyRequest): the cookie was valid.
            if lobby._handshake_state not in _BEFORE_COOKIE:
                return True, []
        out = drain_datagrams(lobby, self._mtu)
        self._reset()
        return False, out

    def take(self) -> tuple[tls.TLSWrappedBuffer, RetransmitTimer, int]:
        taken = self.buf, self.timer, self.key
        self.buf, self.timer, self.key = self._new_buffer()
        return taken

    def refuse(self) -> None:
        drain_datagrams(self.buf, self._mtu)  # the ServerHello it began: not sent
        self._reset()

    def _reset(self) -> None:
        lobby = self.buf
        if lobby._handshake_state is not Step.HELLO_REQUEST:
            try:
                lobby._reset()  # type: ignore[attr-defined]
            except mbedtls_errors.TLSError:
                unbind_timer(self.key, self.timer)
                self.buf, self.timer, self.key = self._new_buffer()
                return
        inbuf = lobby._input_buffer
        if not inbuf.empty():  # type: ignore[attr-defined]
            inbuf.clear()  # type: ignore[attr-defined]
