"""Testing helpers for DTLS (shipped like ``trio.testing``): test PKI and a virtual-time link.

* :func:`make_ca` / :func:`make_cert`: ECDSA P-256 certificates made at test time with
  python-mbedtls' x509 module; :func:`write_pem` writes them for ``openssl`` or ``--cert``.
* :class:`VirtualLink`: many :class:`~firmware_proto.dtls_client.DtlsClient` objects and one
  ``DtlsServer`` (anything with the server's sans-I/O methods) on a discrete-event clock, with
  latency, seeded loss and a ``tamper`` hook that may drop, alter, duplicate or inject datagrams.
  No sockets, no sleeping: a 2-minute handshake timeout takes milliseconds.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Protocol, cast

from mbedtls import hashlib as mbedtls_hashlib
from mbedtls import pk, x509

from firmware_proto.dtls_client import ClientEvent, DtlsClient

__all__ = [
    "ServerLike",
    "Tamper",
    "VirtualLink",
    "make_ca",
    "make_cert",
    "write_pem",
]

_EPOCH = dt.datetime(2020, 1, 1)
_EXPIRY = dt.datetime(2099, 1, 1)


def make_ca(name: str = "meshota test CA", serial: int = 1) -> tuple[x509.CRT, pk.ECC]:
    key = pk.ECC(cast(pk.Curve, pk.Curve.SECP256R1))
    key.generate()
    csr = x509.CSR.new(key, f"CN={name}", mbedtls_hashlib.sha256())
    crt = x509.CRT.selfsign(
        csr, key, _EPOCH, _EXPIRY, serial, basic_constraints=x509.BasicConstraints(True, 1)
    )
    return crt, key


def make_cert(ca: tuple[x509.CRT, pk.ECC], common_name: str, serial: int = 2) -> tuple[x509.CRT, pk.ECC]:
    ca_crt, ca_key = ca
    key = pk.ECC(cast(pk.Curve, pk.Curve.SECP256R1))
    key.generate()
    crt = x509.CRT.new(
        not_before=_EPOCH,
        not_after=_EXPIRY,
        issuer=ca_crt.subject,
        issuer_key=ca_key,
        subject=f"O=meshota, CN={common_name}",
        subject_key=key,
        serial_number=serial,
        digestmod=mbedtls_hashlib.sha256(),
    )
    return crt, key


def write_pem(directory: Path, name: str, crt: x509.CRT, key: pk.ECC) -> tuple[Path, Path]:
    """Write ``name.crt`` and ``name.key`` (PEM); returns both paths."""
    crt_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    crt_path.write_text(crt.to_PEM())
    key_path.write_text(key.export_key("PEM"))
    return crt_path, key_path


class ServerLike(Protocol):
    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None: ...
    def datagrams_to_send(self) -> list[tuple[Hashable, bytes]]: ...
    def events(self) -> list[Any]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


# tamper(direction, peer, datagram) -> datagrams to deliver instead; direction "up" (to the
# server) or "down" (to the client).
Tamper = Callable[[str, Hashable, bytes], list[bytes]]


class VirtualLink:
    """Clients and one server on a virtual clock (see the module docstring)."""

    def __init__(
        self,
        server: ServerLike,
        *,
        latency: float = 0.005,
        loss: float = 0.0,
        seed: int = 0,
        tamper: Tamper | None = None,
    ) -> None:
        self.server = server
        self.latency = latency
        self.loss = loss
        self.rng = random.Random(seed)
        self.tamper = tamper
        self.now = 0.0
        self.clients: dict[Hashable, DtlsClient] = {}
        self.client_events: dict[Hashable, list[ClientEvent]] = {}
        self.server_events: list[Any] = []
        self.delivered: list[tuple[str, Hashable, bytes]] = []  # everything on the wire
        self.lost = 0
        self._queue: list[tuple[float, int, str, Hashable, bytes]] = []
        self._seq = 0

    def add(self, peer: Hashable, client: DtlsClient, *, start: bool = True) -> DtlsClient:
        self.clients[peer] = client
        self.client_events[peer] = []
        if start:
            client.start(self.now)
        self._collect()
        return client

    def inject(self, direction: str, peer: Hashable, datagram: bytes) -> None:
        """Deliver ``datagram`` as if it came off the wire (bypasses loss and tamper)."""
        self._push(self.now + self.latency, direction, peer, datagram)

    def _push(self, at: float, direction: str, peer: Hashable, datagram: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, direction, peer, datagram))

    def _send(self, direction: str, peer: Hashable, datagram: bytes) -> None:
        datagrams = [datagram] if self.tamper is None else self.tamper(direction, peer, datagram)
        for d in datagrams:
            if self.loss and self.rng.random() < self.loss:
                self.lost += 1
                continue
            self._push(self.now + self.latency, direction, peer, d)

    def _collect(self) -> None:
        for peer, client in self.clients.items():
            for d in client.datagrams_to_send():
                self._send("up", peer, d)
            self.client_events[peer].extend(client.events())
        for peer, d in self.server.datagrams_to_send():
            self._send("down", peer, d)
        self.server_events.extend(self.server.events())

    def _next_time(self) -> float | None:
        times = [t for c in self.clients.values() if (t := c.get_timer()) is not None]
        if (t := self.server.get_timer()) is not None:
            times.append(t)
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Advance the clock, delivering datagrams and firing timers, up to ``until``."""
        self._collect()
        while stop is None or not stop():
            at = self._next_time()
            if at is None or at > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, at)
            if self._queue and self._queue[0][0] <= self.now:
                _, _, direction, peer, datagram = heapq.heappop(self._queue)
                self.delivered.append((direction, peer, datagram))
                if direction == "up":
                    self.server.receive_datagram(datagram, peer, self.now)
                elif peer in self.clients:
                    self.clients[peer].receive_datagram(datagram, self.now)
            else:
                for client in self.clients.values():
                    t = client.get_timer()
                    if t is not None and t <= self.now:
                        client.handle_timer(self.now)
                t = self.server.get_timer()
                if t is not None and t <= self.now:
                    self.server.handle_timer(self.now)
            self._collect()
