"""Sans-I/O DTLS 1.2 client for a node (PSK or ECDSA certificate), on python-mbedtls.

The node's MQTT-SN session runs inside this, end to end with the gateway; a relay in between
only ever sees the datagrams produced here. No sockets, no clock: the driver passes ``now``.

Use::

    client = DtlsClient(PskClientConfig("node-17", key))
    client.start(now)                      # queues the ClientHello
    loop:
        for datagram in client.datagrams_to_send(): transmit(datagram)
        for event in client.events(): ...  # SessionEstablished, ApplicationData, ...
        wait until a datagram arrives  -> client.receive_datagram(data, now)
              or until client.get_timer() -> client.handle_timer(now)
    client.send(plaintext)                 # once SessionEstablished was seen
    client.close()                         # close_notify

Events (frozen dataclasses): :class:`SessionEstablished` ``(cipher)``, :class:`ApplicationData`
``(plaintext)`` — one per DTLS record —, :class:`SessionClosed` ``(reason)``,
:class:`HandshakeFailed` ``(reason)``. After a failure or close the client is dead: make a new one.

Handshake retransmission is mbedTLS' own (``handshake_timeout_min`` doubling up to
``handshake_timeout_max``, then :class:`HandshakeFailed`), clocked by ``now`` through
:mod:`wire.mbedtls_glue`. The cookie exchange (HelloVerifyRequest) is transparent.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import TypeAlias

from mbedtls import exceptions as mbedtls_errors
from mbedtls import pk, tls, x509

from wire.mbedtls_glue import (
    ECDSA_CIPHERS,
    PSK_CIPHERS,
    Clock,
    RetransmitTimer,
    Step,
    bind_timer,
    describe_tls_error,
    drain_datagrams,
    unbind_timer,
)

__all__ = [
    "MAX_RECORD_EXPANSION",
    "PSK_CIPHERS",
    "ApplicationData",
    "CertificateClientConfig",
    "ClientConfig",
    "ClientEvent",
    "ClientState",
    "DatagramTooLarge",
    "DtlsClient",
    "DtlsClientError",
    "HandshakeFailed",
    "PskClientConfig",
    "SessionClosed",
    "SessionEstablished",
    "client_dtls_configuration",
]

_MAX_RECORD = 16384


class DtlsClientError(Exception):
    """The caller used the client in the wrong state (e.g. ``send`` before the handshake)."""


class DatagramTooLarge(DtlsClientError):
    """``send`` was given more plaintext than one DTLS record under the MTU carries
    (:data:`MAX_RECORD_EXPANSION`); nothing was sent and the session stays up. Checked before
    mbedTLS sees it: an oversized write leaves python-mbedtls' context unusable for the next one."""


# the largest record expansion of the offered suites (all AEAD): header 13 + explicit nonce 8 + tag 16
MAX_RECORD_EXPANSION = 37


@dataclass(frozen=True, slots=True)
class PskClientConfig:
    identity: str
    key: bytes

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("PSK identity must not be empty")
        if not 1 <= len(self.key) <= 32:
            raise ValueError(f"PSK must be 1..32 bytes, got {len(self.key)}")


@dataclass(frozen=True, slots=True)
class CertificateClientConfig:
    """Client certificate (its subject CN is the device id), its key, and the CA of the gateway."""

    certificate: x509.CRT
    key: pk.ECC
    ca: x509.CRT
    server_hostname: str | None = None  # None: the gateway cert is checked against ``ca`` only


ClientConfig: TypeAlias = PskClientConfig | CertificateClientConfig


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    cipher: str


@dataclass(frozen=True, slots=True)
class ApplicationData:
    plaintext: bytes


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: str


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    reason: str


ClientEvent: TypeAlias = SessionEstablished | ApplicationData | SessionClosed | HandshakeFailed


class ClientState(enum.Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


def client_dtls_configuration(
    config: ClientConfig, *, handshake_timeout_min: float, handshake_timeout_max: float
) -> tls.DTLSConfiguration:
    common = {
        "lowest_supported_version": tls.DTLSVersion.DTLSv1_2,
        "highest_supported_version": tls.DTLSVersion.DTLSv1_2,
        "handshake_timeout_min": handshake_timeout_min,
        "handshake_timeout_max": handshake_timeout_max,
        "anti_replay": True,
    }
    if isinstance(config, PskClientConfig):
        return tls.DTLSConfiguration(
            pre_shared_key=(config.identity, config.key),
            ciphers=PSK_CIPHERS,
            validate_certificates=False,
            **common,  # type: ignore[arg-type]
        )
    return tls.DTLSConfiguration(
        certificate_chain=((config.certificate,), config.key),
        trust_store=tls.TrustStore([config.ca]),
        ciphers=ECDSA_CIPHERS,
        validate_certificates=True,
        **common,  # type: ignore[arg-type]
    )


class DtlsClient:
    """One DTLS 1.2 client session (see the module docstring for the driving loop)."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        mtu: int = 1200,
        handshake_timeout_min: float = 1.0,
        handshake_timeout_max: float = 60.0,
    ) -> None:
        self._mtu = mtu
        self._clock = Clock()
        self._timer = RetransmitTimer(self._clock)
        conf = client_dtls_configuration(
            config,
            handshake_timeout_min=handshake_timeout_min,
            handshake_timeout_max=handshake_timeout_max,
        )
        hostname = config.server_hostname if isinstance(config, CertificateClientConfig) else None
        self._buf = tls.ClientContext(conf).wrap_buffers(hostname)
        self._buf.setmtu(mtu)
        self._timer_key = bind_timer(self._buf, self._timer)
        self._state = ClientState.IDLE
        self._out: list[bytes] = []
        self._events: list[ClientEvent] = []
        self._scratch = bytearray(_MAX_RECORD)

    @property
    def state(self) -> ClientState:
        return self._state

    # --- inputs ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self._state is not ClientState.IDLE:
            raise DtlsClientError(f"start() in state {self._state.value}")
        self._clock.now = now
        self._state = ClientState.HANDSHAKING
        self._pump_handshake()

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Feed one datagram from the gateway (or relay). Bad records are dropped by mbedTLS."""
        if self._state in (ClientState.IDLE, ClientState.CLOSED):
            return
        self._clock.now = now
        inbuf = self._buf._input_buffer  # leftovers of a rejected datagram must not merge
        if not inbuf.empty():  # type: ignore[attr-defined]
            inbuf.clear()  # type: ignore[attr-defined]
        self._buf.receive_from_network(data)
        if self._state is ClientState.HANDSHAKING:
            self._pump_handshake()
        if self._state is ClientState.ESTABLISHED:
            self._read_records()

    def handle_timer(self, now: float) -> None:
        self._clock.now = now
        if self._state is ClientState.HANDSHAKING and self._timer.state() == 2:
            self._pump_handshake()

    def send(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` as application data (one record if it fits the MTU)."""
        if self._state is not ClientState.ESTABLISHED:
            raise DtlsClientError(f"send() in state {self._state.value}")
        if not plaintext:
            return
        if len(plaintext) > self._mtu - MAX_RECORD_EXPANSION:
            raise DatagramTooLarge(
                f"{len(plaintext)} bytes do not fit one DTLS record under the {self._mtu}-byte MTU "
                f"(at most {self._mtu - MAX_RECORD_EXPANSION})"
            )
        try:
            self._buf.write(plaintext)
        except mbedtls_errors.TLSError as exc:
            self._fail_closed(f"write failed: {exc.msg}")
            return
        self._flush()

    def close(self) -> None:
        """Send close_notify (if established) and release the mbedTLS context."""
        if self._state is ClientState.ESTABLISHED:
            with contextlib.suppress(mbedtls_errors.TLSError):
                self._buf.shutdown()
            self._flush()
        if self._state is not ClientState.CLOSED:
            self._finish(SessionClosed("closed locally"))

    # --- outputs -----------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ClientEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        if self._state is ClientState.HANDSHAKING:
            return self._timer.deadline
        return None

    # --- internals ---------------------------------------------------------------------------

    def _flush(self) -> None:
        self._out.extend(drain_datagrams(self._buf, self._mtu))

    def _pump_handshake(self) -> None:
        buf = self._buf
        for _ in range(64):
            if buf._handshake_state is Step.OVER:
                break
            try:
                buf.do_handshake()
            except (tls.WantReadError, tls.HelloVerifyRequest):
                break
            except tls.WantWriteError:
                continue  # output waits in the ring; keep stepping
            except mbedtls_errors.TLSError as exc:
                self._flush()  # a fatal alert, if mbedTLS wrote one
                self._finish(HandshakeFailed(_describe(exc)))
                return
        self._flush()
        if buf._handshake_state is Step.OVER:
            self._state = ClientState.ESTABLISHED
            self._events.append(SessionEstablished(str(buf.cipher() or "?")))
            self._read_records()  # application data may share the last datagram

    def _read_records(self) -> None:
        buf, scratch = self._buf, self._scratch
        while True:
            try:
                n = buf.readinto(scratch, len(scratch))  # type: ignore[arg-type]
            except tls.WantReadError:
                break
            except tls.WantWriteError:
                continue
            except mbedtls_errors.TLSError as exc:
                self._flush()
                self._finish(SessionClosed(_describe(exc)))
                return
            self._events.append(ApplicationData(bytes(scratch[:n])))
        self._flush()

    def _fail_closed(self, reason: str) -> None:
        self._finish(SessionClosed(reason))

    def _finish(self, event: ClientEvent) -> None:
        self._state = ClientState.CLOSED
        unbind_timer(self._timer_key, self._timer)
        self._timer.deadline = None
        self._events.append(event)


_REASONS = {
    0x7880: "peer sent close_notify",
    0x7780: "peer sent a fatal alert",
    0x6800: "handshake timed out (no answer after all retransmissions)",
    0x6C80: "unknown PSK identity",
    0x2700: "certificate verification failed",
}


def _describe(exc: mbedtls_errors.TLSError) -> str:
    return describe_tls_error(exc, _REASONS)
