"""A keyless attacker for the DTLS half-open tests and benchmark (test support only).

It does what an attacker without any key can: answer HelloVerifyRequests (it receives at its own
address) and so leave the server with *half-open* handshakes — a verified cookie, a ServerHello
sent, and never a ClientKeyExchange. The ClientHellos are made by real mbedTLS clients
(:class:`~firmware_proto.dtls_client.DtlsClient` with a made-up PSK identity), one per fake peer.

* :func:`half_open` — sans-I/O, against a ``DtlsServer`` directly (virtual time).
* :class:`UdpFlooder` — real UDP from one source address, as fast as it can for a bounded time:
  directly from a pool of ports, or as a relay wrapping every ClientHello in MQTT-SN forwarder
  encapsulation under a fresh wireless node id. It sends one ClientHello made once for every fake
  peer (a cookie is bound to the peer, not to the hello) and makes a real mbedTLS client only to
  answer a HelloVerifyRequest, so it sends as fast as the socket takes datagrams.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import time
from collections.abc import Hashable
from typing import Any

from firmware_proto import dtls_client as dc
from mqttsn import Encapsulated, decode, encode

KEYLESS = dc.PskClientConfig("nobody", bytes(16))


def half_open(
    server: Any, peer: Hashable, now: float, others: list[tuple[Hashable, bytes]] | None = None
) -> bool:
    """Cookie exchange then the cookied ClientHello from ``peer``; never another word.

    Returns True when the server answered the cookied ClientHello (a ServerHello flight: it now
    holds a half-open handshake for ``peer``). What the server sent to other peers meanwhile is
    appended to ``others`` (or dropped when None).
    """
    client = dc.DtlsClient(KEYLESS)
    client.start(now)

    def exchange() -> list[bytes]:
        for d in client.datagrams_to_send():
            server.receive_datagram(d, peer, now)
        mine = []
        for p, d in server.datagrams_to_send():
            if p == peer:
                mine.append(d)
            elif others is not None:
                others.append((p, d))
        return mine

    answer = exchange()
    if not answer or answer[0][13] != 3:  # no HelloVerifyRequest (rate-limited)
        return False
    for d in answer:
        client.receive_datagram(d, now)
    flight = exchange()
    return bool(flight) and flight[0][0] == 22 and flight[0][13] == 2  # ServerHello


class UdpFlooder:
    """Half-open handshakes against ``target`` from ``bind`` for at most ``duration`` seconds.

    ``relay=True``: one socket, every fake peer a fresh node id in forwarder encapsulation (the
    attack of issue 12). ``relay=False``: ``ports`` sockets on ``bind``'s host, one fake peer per
    socket at a time. Counts in :attr:`stats`. Blocking sockets; run it in a thread or process.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        bind: str = "127.0.0.2",
        relay: bool = True,
        ports: int = 64,
        batch: int = 64,
    ) -> None:
        self.target, self.relay, self.batch = target, relay, batch
        n = 1 if relay else ports
        self.socks = []
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((bind, 0))
            sock.setblocking(False)
            self.socks.append(sock)
        self._ids = itertools.count(1)
        probe = dc.DtlsClient(KEYLESS)
        probe.start(0.0)
        (self._hello,) = probe.datagrams_to_send()  # one ClientHello, sent for every fake peer
        self.stats = dict.fromkeys(("hellos", "hello_verify", "cookied", "server_hello", "alerts"), 0)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()

    def _send(self, sock_index: int, node_id: bytes, datagram: bytes) -> None:
        if self.relay:
            datagram = encode(Encapsulated(node_id=node_id, inner=datagram))
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.socks[sock_index].sendto(datagram, self.target)

    def run(self, duration: float, stop: Any = None) -> dict[str, int]:
        """Flood until ``duration`` has passed (or ``stop()`` is true); returns :attr:`stats`."""
        deadline = time.monotonic() + duration
        fds = {s.fileno(): i for i, s in enumerate(self.socks)}
        while time.monotonic() < deadline and not (stop is not None and stop()):
            for _ in range(self.batch):
                n = next(self._ids)
                i = 0 if self.relay else n % len(self.socks)
                self._send(i, n.to_bytes(4, "big") if self.relay else b"", self._hello)
                self.stats["hellos"] += 1
            self._drain(fds, 0.0)
        return self.stats

    def _drain(self, fds: dict[int, int], timeout: float) -> None:
        ready, _, _ = select.select(list(fds), [], [], timeout)
        for fd in ready:
            i = fds[fd]
            sock = self.socks[i]
            for _ in range(256):
                try:
                    data = sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                node_id = b""
                if self.relay:
                    try:
                        packet = decode(data)
                    except Exception:
                        continue
                    if not isinstance(packet, Encapsulated):
                        continue
                    node_id, data = packet.node_id, packet.inner
                if len(data) < 14:
                    continue
                if data[0] == 21:
                    self.stats["alerts"] += 1
                    continue
                if data[13] == 2:
                    self.stats["server_hello"] += 1
                    continue
                if data[13] != 3:
                    continue
                self.stats["hello_verify"] += 1
                client = dc.DtlsClient(KEYLESS)  # the cookie is bound to the peer, not the hello
                client.start(0.0)
                client.datagrams_to_send()
                client.receive_datagram(data, 0.0)
                for d in client.datagrams_to_send():
                    self._send(i, node_id, d)
                    self.stats["cookied"] += 1
                client.close()
