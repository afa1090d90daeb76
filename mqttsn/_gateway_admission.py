"""Who may open, resume, wake or replace a session under which client id (sans-I/O).

Two rules, enforced by the Gateway on every path that finds a session by client id (CONNECT,
PINGREQ(ClientId) wake-ups) and on every datagram of a live session:

* A verified transport identity (DTLS PSK identity / certificate CN, handed in as ``identity=``)
  owns its client id. A session created under it is only ever resumed, woken or replaced by the
  same identity. An unverified peer (plain UDP, forwarder-encapsulated UDP) can never use a client
  id that a verified identity holds or has held since the gateway started, nor one that
  :attr:`GatewayConfig.protected_client_id` says a key would authenticate (PSK identities, ...).
  Gateway sessions live in memory only, so the "has held" memory does too: the last
  :attr:`GatewayConfig.max_remembered_verified_ids` verified ids, least recently verified
  forgotten first (ids with a live verified session are refused regardless).
* Unverified peers hold at most :attr:`GatewayConfig.max_unverified_per_source` sessions per
  source host (the relay's host for encapsulated nodes) and
  :attr:`GatewayConfig.max_unverified_sessions` in all, and open new ones at most
  :attr:`GatewayConfig.unverified_connect_rate_per_source` per second per source (bursts up to the
  per-source cap) and :attr:`GatewayConfig.unverified_connect_rate` per second in all (bursts up to
  the overall cap) — so a keyless flood can neither hold nor churn broker connections without
  bound (each new session is a TCP connection to the broker).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

from ._forwarding import ForwardedPeer

if TYPE_CHECKING:
    from ._gateway_config import GatewayConfig

__all__ = ["Admission", "source_of"]


def source_of(peer: Hashable) -> Hashable:
    """The source a peer is counted against: the host of a UDP address, the relay's host for a
    node behind a forwarder, else the peer itself."""
    while isinstance(peer, ForwardedPeer):
        peer = peer.relay
    if isinstance(peer, tuple) and len(peer) >= 2:
        host: Hashable = peer[0]
        return host
    return peer


class _Bucket:
    """Token bucket: ``rate`` tokens per second, at most ``burst``."""

    __slots__ = ("at", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.at = now

    def refill(self, rate: float, burst: float, now: float) -> bool:
        """Add what accrued up to ``now``; True if a token is there (not taken)."""
        if math.isinf(rate):
            self.tokens = max(self.tokens, burst)
        elif now > self.at:
            self.tokens = min(burst, self.tokens + (now - self.at) * rate)
            self.at = now
        return self.tokens >= 1


MAX_BUCKETS = 4096  # per-source rate buckets kept (least recently used dropped: a full one)


class Admission:
    """Client-id ownership and unverified-session counts (see the module docstring)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._verified_ids: OrderedDict[str, None] = OrderedDict()
        self._per_source: Counter[Hashable] = Counter()
        self.unverified = 0
        self._all = _Bucket(float(max(config.max_unverified_sessions, 1)), 0.0)
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    # --- client-id ownership ------------------------------------------------------------------

    def remember_verified(self, client_id: str) -> None:
        """``client_id`` was used under a verified identity: unverified peers never get it."""
        ids = self._verified_ids
        ids[client_id] = None
        ids.move_to_end(client_id)
        while len(ids) > max(self.config.max_remembered_verified_ids, 0):
            ids.popitem(last=False)

    def was_verified(self, client_id: str) -> bool:
        return client_id in self._verified_ids

    def refuse_unverified_id(self, client_id: str, live_identity: str | None) -> str | None:
        """Why an unverified peer may not use ``client_id`` (None: it may). ``live_identity``: the
        verified identity of the live session holding that id, if any."""
        if live_identity is not None:
            return f"client id {client_id!r} is held by a verified session"
        if client_id in self._verified_ids:
            return f"client id {client_id!r} was used by a verified identity"
        check = self.config.protected_client_id
        if check is not None and check(client_id):
            return f"client id {client_id!r} belongs to a key holder (use the DTLS listener)"
        return None

    # --- unverified session counts ------------------------------------------------------------

    def refuse_new_unverified(self, peer: Hashable, now: float) -> str | None:
        """Why one more unverified session at ``peer`` is refused (None: admitted; the session
        is then counted against the connect rates)."""
        cfg = self.config
        src = source_of(peer)
        if self.unverified >= cfg.max_unverified_sessions:
            return f"unverified sessions at their maximum ({cfg.max_unverified_sessions})"
        if self._per_source[src] >= cfg.max_unverified_per_source:
            return f"unverified sessions of this source at their maximum ({cfg.max_unverified_per_source})"
        if math.isinf(cfg.unverified_connect_rate) and math.isinf(cfg.unverified_connect_rate_per_source):
            return None  # no rate limits (a simulation of trusted nodes)
        burst = float(max(cfg.max_unverified_per_source, 1))
        bucket = self._buckets.get(src)
        if bucket is None:
            bucket = self._buckets[src] = _Bucket(burst, now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(src)
        rate = cfg.unverified_connect_rate_per_source
        if not bucket.refill(rate, burst, now):
            return f"new unverified sessions of this source above {rate:g}/s"
        if not self._all.refill(cfg.unverified_connect_rate, float(max(cfg.max_unverified_sessions, 1)), now):
            return f"new unverified sessions above {cfg.unverified_connect_rate:g}/s"
        bucket.tokens -= 1
        self._all.tokens -= 1
        return None

    def opened(self, peer: Hashable) -> None:
        self.unverified += 1
        self._per_source[source_of(peer)] += 1

    def closed(self, peer: Hashable) -> None:
        src = source_of(peer)
        self.unverified -= 1
        self._per_source[src] -= 1
        if self._per_source[src] <= 0:
            del self._per_source[src]

    def moved(self, old: Hashable, new: Hashable) -> None:
        """An unverified session rebound from ``old`` to ``new`` (a sleeper woke elsewhere)."""
        self.closed(old)
        self.opened(new)

    def per_source(self, peer: Hashable) -> int:
        return self._per_source.get(source_of(peer), 0)
