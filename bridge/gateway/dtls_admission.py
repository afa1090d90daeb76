"""Admission of DTLS handshakes: the half-open budget of :class:`~bridge.gateway.dtls_server.DtlsServer`.

Pure bookkeeping (no mbedTLS, no I/O, no clock: every call takes ``now``). The server asks it two
questions about every ClientHello from a peer without a session:

* before any mbedTLS work — :meth:`HandshakeAdmission.allow_hello` (no cookie yet: answer with a
  HelloVerifyRequest?) and :meth:`HandshakeAdmission.allow_attempt` (a cookie: try to verify it
  and start a handshake?). Both are per-source token buckets; a source over its rate is dropped
  silently (a real client retransmits a second later);
* after mbedTLS verified the cookie (the client proved it receives at its address) —
  :meth:`HandshakeAdmission.admit`: may this *half-open* handshake (one mbedTLS context, ~47 KiB,
  until the client's Finished verifies) be kept? Half-opens are bounded separately from
  established sessions: at most ``max_handshakes`` in all, ``per_source`` per source and
  ``per_relay`` per relay. At a cap the **oldest** half-open of that relay / source (for the global
  cap: of the source holding the most) is evicted to make room, so a flood only ever displaces
  its own handshakes.

Sources. A peer ``(host, port, ...)`` is a node talking to us directly; its source is the host
(an IPv6 host's /64), so one machine cannot multiply its budget with ports. A peer with a
``relay`` attribute (``mqttsn.ForwardedPeer``: a root relay's address plus a wireless node id) is
behind that relay: its relay is the UDP address the encapsulation came from, its source that
address's host. Any other peer (a simulator's node number) is its own source.

Returning peers. A peer that completed a handshake (its key verified) is remembered (LRU, up to
``known_peers``). Its next ClientHello skips the rate limits and per-source/per-relay caps, counts
against ``max_handshakes`` only, and may evict an unverified peer's half-open but is never evicted
by one: a keyless flood cannot lock out a node that has connected before, nor a node with a
session (its datagrams never reach admission at all).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["HandshakeAdmission", "HandshakeLimits", "Peer", "source_of"]

Peer = Hashable


@dataclass(frozen=True, slots=True)
class HandshakeLimits:
    """The half-open budget (see the module docstring); docs/limits.md lists the defaults."""

    max_handshakes: int = 256  # half-open handshakes in all (each holds one mbedTLS context)
    per_source: int = 32  # half-open handshakes per source host
    per_relay: int = 16  # half-open handshakes per relay (UDP address of the encapsulation)
    rate: float = 20.0  # new half-opens per second per source (token bucket) ...
    burst: int = 40  # ... holding at most this many tokens
    hello_rate: float = 200.0  # cookieless ClientHellos answered per second per source ...
    hello_burst: int = 400  # ... holding at most this many tokens
    known_peers: int = 10_000  # returning peers remembered (LRU)
    tracked_sources: int = 4096  # sources whose token buckets are kept (LRU)

    def __post_init__(self) -> None:
        for name in (
            "max_handshakes",
            "per_source",
            "per_relay",
            "burst",
            "hello_burst",
            "known_peers",
            "tracked_sources",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"HandshakeLimits.{name} must be at least 1")
        if not (self.rate > 0 and self.hello_rate > 0):
            raise ValueError("HandshakeLimits rates must be > 0")


def _host(addr: Hashable) -> Hashable:
    if isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[0], str):
        host = addr[0]
        if ":" in host:
            try:
                return ipaddress.IPv6Network(f"{host.split('%')[0]}/64", strict=False)
            except ValueError:
                return host
        return host
    return addr


def source_of(peer: Peer) -> tuple[Hashable, Hashable | None]:
    """``(source, relay)`` of a peer: relay is None for a node talking to us directly."""
    relay = getattr(peer, "relay", None)
    if relay is not None and hasattr(peer, "node_id"):
        return _host(relay), relay
    return _host(peer), None


def _udp_address(peer: Peer) -> Hashable:
    relay = source_of(peer)[1]
    return relay if relay is not None else peer


class _Bucket:
    __slots__ = ("hello", "hs", "stamp")

    def __init__(self, hello: float, hs: float, now: float) -> None:
        self.hello, self.hs, self.stamp = hello, hs, now


@dataclass(slots=True)
class _HalfOpen:
    source: Hashable
    relay: Hashable | None
    known: bool


class HandshakeAdmission:
    """Rate limits and the half-open budget (see the module docstring)."""

    def __init__(self, limits: HandshakeLimits | None = None) -> None:
        self.limits = limits or HandshakeLimits()
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._half_open: OrderedDict[Peer, _HalfOpen] = OrderedDict()  # oldest first
        self._per_source: dict[Hashable, int] = {}
        self._per_relay: dict[Hashable, int] = {}
        self._known: OrderedDict[Peer, None] = OrderedDict()
        # UDP address -> until when its ClientHellos are dropped before any parsing (see mute)
        self.muted: dict[Hashable, float] = {}
        # UDP address -> how many known peers it carries (a relay's children, or the node itself)
        self.vouched: dict[Hashable, int] = {}

    # --- returning peers ---------------------------------------------------------------------

    def is_known(self, peer: Peer) -> bool:
        return peer in self._known

    def remember(self, peer: Peer) -> None:
        """``peer`` completed a handshake: it is a returning peer from now on."""
        if peer in self._known:
            self._known.move_to_end(peer)
            return
        self._known[peer] = None
        addr = _udp_address(peer)
        self.vouched[addr] = self.vouched.get(addr, 0) + 1
        if len(self._known) > self.limits.known_peers:
            self.forget(next(iter(self._known)))

    def forget(self, peer: Peer) -> None:
        if peer in self._known:
            del self._known[peer]
            _decrement(self.vouched, _udp_address(peer))

    # --- rate limits (before any mbedTLS work) -----------------------------------------------

    def _bucket(self, source: Hashable, now: float) -> _Bucket:
        lim = self.limits
        b = self._buckets.get(source)
        if b is None:
            b = self._buckets[source] = _Bucket(lim.hello_burst, lim.burst, now)
            if len(self._buckets) > lim.tracked_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            elapsed = max(0.0, now - b.stamp)
            b.hello = min(lim.hello_burst, b.hello + elapsed * lim.hello_rate)
            b.hs = min(lim.burst, b.hs + elapsed * lim.rate)
            b.stamp = now
        return b

    def allow_hello(self, peer: Peer, now: float) -> bool:
        """A ClientHello without a cookie: may it get a HelloVerifyRequest?"""
        if peer in self._known:
            return True
        b = self._bucket(source_of(peer)[0], now)
        if b.hello < 1:
            return False
        b.hello -= 1
        return True

    def allow_attempt(self, peer: Peer, now: float) -> bool:
        """A ClientHello with a cookie: may mbedTLS check it and start a handshake?"""
        if peer in self._known:
            return True
        b = self._bucket(source_of(peer)[0], now)
        if b.hs < 1:
            return False
        b.hs -= 1
        return True

    def mute(self, peer: Peer, now: float) -> None:
        """A ClientHello from ``peer`` was over its source's rate: until a token is back, further
        ClientHellos from the same UDP address (the relay's, for a relayed peer) from peers that
        are not known are dropped at the door (``DtlsServer.screen``), so a flood costs a dict
        look-up per datagram instead of a parse."""
        source = source_of(peer)[0]
        addr = _udp_address(peer)
        b = self._buckets.get(source)
        wait = 1.0 / min(self.limits.rate, self.limits.hello_rate)
        if b is not None:
            wait = max(0.0, (1 - b.hello) / self.limits.hello_rate)
        muted = self.muted
        muted.pop(addr, None)
        muted[addr] = now + wait
        if len(muted) > self.limits.tracked_sources:
            del muted[next(iter(muted))]

    def is_muted(self, addr: Hashable, now: float) -> bool:
        until = self.muted.get(addr)
        if until is None:
            return False
        if now >= until:
            del self.muted[addr]
            return False
        return True

    # --- the half-open budget ----------------------------------------------------------------

    @property
    def half_open(self) -> int:
        return len(self._half_open)

    def count(self, *, source: Hashable | None = None, relay: Hashable | None = None) -> int:
        if relay is not None:
            return self._per_relay.get(relay, 0)
        return self._per_source.get(source, 0)

    def admit(self, peer: Peer, evict: Callable[[Peer, str], None]) -> str | None:
        """Make room for a verified ClientHello from ``peer``; None when admitted (then call
        :meth:`add`), else the reason it is refused. ``evict(victim, reason)`` must end the
        victim's handshake and call :meth:`remove` for it."""
        lim = self.limits
        source, relay = source_of(peer)
        known = peer in self._known
        if not known:
            if relay is not None and self._per_relay.get(relay, 0) >= lim.per_relay:
                victim = self._oldest(lambda h: h.relay == relay)
                if victim is None:
                    return f"{lim.per_relay} handshakes already in progress through relay {relay!r}"
                evict(victim, f"oldest of {lim.per_relay} half-open handshakes through its relay")
            if self._per_source.get(source, 0) >= lim.per_source:
                victim = self._oldest(lambda h: h.source == source)
                if victim is None:
                    return f"{lim.per_source} handshakes already in progress from {source!r}"
                evict(victim, f"oldest of {lim.per_source} half-open handshakes from its source")
        if len(self._half_open) >= lim.max_handshakes:
            victim = self._global_victim(source)
            if victim is None:
                return f"{lim.max_handshakes} handshakes already in progress"
            evict(victim, f"oldest half-open handshake of the busiest source ({lim.max_handshakes} in all)")
        return None

    def add(self, peer: Peer) -> None:
        source, relay = source_of(peer)
        self.remove(peer)
        self._half_open[peer] = _HalfOpen(source, relay, peer in self._known)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        if relay is not None:
            self._per_relay[relay] = self._per_relay.get(relay, 0) + 1

    def remove(self, peer: Peer) -> None:
        """The handshake of ``peer`` ended (established, failed, evicted); no-op if not tracked."""
        h = self._half_open.pop(peer, None)
        if h is None:
            return
        _decrement(self._per_source, h.source)
        if h.relay is not None:
            _decrement(self._per_relay, h.relay)

    def _oldest(self, match: Callable[[_HalfOpen], bool]) -> Peer | None:
        for peer, h in self._half_open.items():
            if not h.known and match(h):
                return peer
        return None

    def _global_victim(self, source: Hashable) -> Peer | None:
        """The oldest unverified half-open of the source holding the most (own source on ties)."""
        unknown: dict[Hashable, int] = {}
        for h in self._half_open.values():
            if not h.known:
                unknown[h.source] = unknown.get(h.source, 0) + 1
        if not unknown:
            return None
        top = max(unknown.values())
        busiest = source if unknown.get(source) == top else next(s for s, n in unknown.items() if n == top)
        return self._oldest(lambda h: h.source == busiest)


def _decrement(counts: dict[Hashable, int], key: Hashable) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
