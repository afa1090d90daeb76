"""Radio model: airtime, per-link loss, MAC retries for unicast, none for broadcast, channel sharing.

A transmission occupies the sender and every neighbour's channel for its airtime (carrier sense:
the next sender in that neighbourhood waits), so frames in one neighbourhood serialise while
distant parts of the mesh transmit in parallel. With ``collisions`` on, a frame reaching a node
that is already receiving another (a hidden terminal) is lost there.

Accounting is per node: frames and bytes on air (PHY overhead included), tx and rx airtime, and
when its last transmission ended (energy from radio states: mesh_sim/energy.py).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from heapq import heappush
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from .routes import Hop, Route, hold, pack
from .topology import Topology

if TYPE_CHECKING:
    from .clock import EventClock

__all__ = ["BROADCAST", "PROFILES", "Radio", "RadioProfile"]

BROADCAST = -1
Burst = tuple[bytes, ...]  # frames sent back to back as one queue entry (Radio.send_burst)
Shape = tuple[int, int, float, float]  # frames, bytes on air, airtime with CSMA slots, mean frame airtime
GROUP_KINDS = frozenset({"data", "stream-control", "feedback"})  # the group link's own datagrams


@dataclass(frozen=True, slots=True)
class RadioProfile:
    name: str
    bitrate: float  # bit/s on air
    max_frame: int  # bytes of one frame above the PHY (PSDU / MPDU)
    phy_overhead: int  # preamble + PHY header bytes, on air but not in max_frame
    mac_header: int  # MAC header + FCS bytes inside every frame
    net_header: int  # network/transport header inside every frame (IPHC+UDP, mesh header)
    ack_bytes: int  # an acknowledgement frame (unicast only)
    mac_retries: int  # retransmissions after the first attempt (unicast only)
    slot: float  # mean CSMA backoff + turnaround before each frame, seconds
    hop_latency: float  # forwarding delay in a node, seconds
    tx_current_ma: float
    rx_current_ma: float
    voltage: float = 3.0
    max_datagram: int = 0  # largest datagram the network layer carries (fragmented); 0 = one frame
    frag_first: int = 4  # 6LoWPAN FRAG1 header (RFC 4944)
    frag_next: int = 5  # FRAGN header

    def payload_room(self) -> int:
        """Bytes an upper layer (MQTT-SN datagram) may put in one frame."""
        return self.max_frame - self.mac_header - self.net_header

    def airtime(self, frame_bytes: int) -> float:
        return (frame_bytes + self.phy_overhead) * 8.0 / self.bitrate

    def datagram_room(self) -> int:
        """Bytes an upper layer may put in one datagram (fragmented into frames if need be)."""
        return max(self.payload_room(), self.max_datagram - self.net_header)

    def frames_of(self, payload: int) -> list[int]:
        """Frame sizes (MAC header and FCS included, PHY excluded) carrying a ``payload``-byte datagram.

        The network header travels once; a datagram larger than one frame is cut into 6LoWPAN
        fragments (FRAG1 then FRAGN headers, fragment data a multiple of 8 bytes)."""
        whole = payload + self.net_header
        if payload <= self.payload_room():
            return [whole + self.mac_header]
        room = self.max_frame - self.mac_header
        first = (room - self.frag_first) // 8 * 8
        nxt = (room - self.frag_next) // 8 * 8
        sizes = [self.mac_header + self.frag_first + first]
        left = whole - first
        while left > 0:
            part = min(nxt, left)
            sizes.append(self.mac_header + self.frag_next + part)
            left -= part
        return sizes


PROFILES: dict[str, RadioProfile] = {
    # 802.15.4 2.4 GHz O-QPSK: 250 kbit/s, PSDU <= 127 B, 6 B SHR+PHR, MAC 9 + FCS 2, IPHC ~7 + UDP-NHC 4,
    # ACK 5 B, macMaxFrameRetries 3, mean BE=3 backoff 1.12 ms + CCA/turnaround 0.32 ms; nRF52840 ~5-6 mA.
    # Datagrams up to the IPv6 minimum MTU (1280 B) are carried as 6LoWPAN fragments (RFC 4944).
    "802.15.4": RadioProfile(
        "802.15.4",
        250_000,
        127,
        6,
        11,
        11,
        5,
        3,
        0.00144,
        0.002,
        tx_current_ma=6.4,
        rx_current_ma=6.3,
        max_datagram=1280,
    ),
    # ESP-WIFI-MESH: ~1.5 Mbit/s per-link application rate, 1472 B mesh payload (MESH_MPS) in 1500 B,
    # per-hop 10-30 ms, ESP32 ~190 mA tx / ~100 mA rx.
    "wifi-mesh": RadioProfile(
        "wifi-mesh",
        1_500_000,
        1500,
        24,
        28,
        28,
        14,
        7,
        0.0005,
        0.010,
        tx_current_ma=190.0,
        rx_current_ma=100.0,
    ),
}


class Radio:
    """Shared channel over a :class:`Topology`; counts everything per node."""

    def __init__(
        self, topology: Topology, profile: RadioProfile, rng: random.Random, *, collisions: bool = False
    ) -> None:
        self.topo = topology
        self.profile = profile
        self.rng = rng
        self.collisions = collisions
        n = topology.n
        self.alive = [True] * n
        # asleep (``sleep``): a powered node whose radio is off for broadcasts, because nothing
        # more is needed of it (mesh_sim/energy.py); it still takes and forwards unicast hops (a
        # duty-cycled MAC wakes for them). rx_on[v]: alive and not asleep (who hears a broadcast)
        self.asleep = [False] * n
        self.rx_on = [True] * n
        self.channel_free = [0.0] * n  # when this node's neighbourhood channel is free
        self.rx_busy_until = [0.0] * n
        self.frames_tx = [0] * n
        self.bytes_tx = [0] * n
        self.tx_time = [0.0] * n
        self.rx_time = [0.0] * n
        self.last_tx_end = [0.0] * n  # when each node's last transmission ended (energy: awake time)
        self.frames_lost = 0
        self.collided = 0
        # event-driven transmit queues (attach): (dst, data, payload bytes, kind, on_done, ready);
        # a burst (send_burst): data is the tuple of its frames, its Shape stands for the length
        self.queues: list[
            deque[tuple[int, Burst | bytes | None, int | Shape, str, Callable[[bool], None] | None, float]]
        ] = [deque() for _ in range(n)]
        self.busy = [False] * n
        self.bytes_by_kind: dict[str, int] = {}
        self.frames_by_kind: dict[str, int] = {}
        self._room = profile.datagram_room()
        self.held: dict[int, list[list[Any]]] = {}  # up frames relays hold for their pace (routes.hold)
        self._clock: EventClock | None = None
        self._deliver: Callable[[int, int, bytes], None] = lambda _r, _s, _d: None
        self._on_idle: Callable[[int], None] = lambda _n: None
        self._deliver_all: Callable[[list[int], int, bytes], None] | None = None
        self._deliver_burst: Callable[[list[tuple[int, Sequence[bytes]]], int, Burst], None] | None = None
        self._geometry: dict[int | tuple[int, ...], Shape] = {}
        self._inflight: list[tuple[float, float, bool, int]] = [(0.0, 0.0, False, 0)] * n
        self._nbrs: list[list[int] | None] = [None] * n
        self._loss_to: list[dict[int, float] | None] = [None] * n  # per node: neighbour -> link loss
        self.group_queued = [0] * n  # group-link datagrams (GROUP_KINDS) in each node's queue
        self._hearing: dict[tuple[int, int], list[tuple[int, bool, float]]] = {}
        self._gaps: dict[int, list[tuple[int, float]]] = {}  # bursts: (neighbour, log(1 - loss))

    # -- event-driven transmissions (the group stream) -------------------------------------------
    def attach(
        self,
        clock: EventClock,
        deliver: Callable[[int, int, bytes], None],
        on_idle: Callable[[int], None],
        deliver_all: Callable[[list[int], int, bytes], None] | None = None,
        deliver_burst: Callable[[list[tuple[int, Sequence[bytes]]], int, Burst], None] | None = None,
    ) -> None:
        """Frames sent with :meth:`send` go on air in clock time; ``deliver(receiver, sender, data)``
        hands a received datagram up; ``on_idle(node)`` says a node's transmit queue ran empty, or
        its group-link datagrams (GROUP_KINDS) fell below two (back-pressure for stream cores).
        ``deliver_all(receivers, sender, data)``, if given, takes one broadcast's receivers at once
        (in the order ``deliver`` would have been called for each: the same run, fewer calls).
        ``deliver_burst([(receiver, frames it got), ...], sender, burst)`` takes a burst's
        receivers (:meth:`send_burst`; ``burst``: every frame sent); without it each frame a
        receiver got goes to ``deliver``."""
        self._clock = clock
        self._deliver = deliver
        self._on_idle = on_idle
        self._deliver_all = deliver_all
        self._deliver_burst = deliver_burst

    def power(self, node: int, on: bool) -> None:
        """The node powers on (awake) or off."""
        self.alive[node] = on
        self.asleep[node] = False
        self.rx_on[node] = on

    def sleep(self, node: int, asleep: bool) -> None:
        """The node's radio sleeps (no broadcast reaches it, no rx time) or wakes."""
        self.asleep[node] = asleep
        self.rx_on[node] = self.alive[node] and not asleep

    def queued(self, node: int) -> int:
        return len(self.queues[node])

    def send(
        self,
        src: int,
        dst: int,
        data: bytes | None,
        *,
        size: int | None = None,
        kind: str = "stream",
        on_done: Callable[[bool], None] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Queue one datagram (``dst`` = BROADCAST: no ACK, no retry; else link ACKs and MAC retries
        per fragment). ``data`` is handed to receivers; ``size`` overrides its length (modelled
        payloads); ``on_done(delivered)`` runs when a unicast ends; ``delay``: the datagram enters
        the queue now but is not sent before ``now + delay`` (a forwarding node's hop latency,
        without an event of its own)."""
        if not self.alive[src]:
            if on_done is not None:
                on_done(False)
            return
        length = size if size is not None else len(data) if data is not None else 0
        assert self._clock is not None
        self._enqueue(src, (dst, data, length, kind, on_done, self._clock.now + delay))

    def send_path(
        self,
        path: Sequence[int],
        size: int,
        done: Callable[[bool], None],
        *,
        kind: str = "control",
        record: int | None = None,
        pace: float = 0.0,
        pace_first: bool = False,
    ) -> None:
        """A modelled ``size``-byte datagram forwarded hop by hop along ``path`` (``path[0]``
        sends), each hop a link-ACKed unicast (:meth:`send` with MAC retries per fragment); each
        node on the way forwards it ``hop_latency`` after it arrived. ``done(True)`` runs
        ``hop_latency`` after the last hop ended (the receiver has it), ``done(False)`` when a hop
        ran out of retries (at its end) or a sender on the way died.

        The same as :meth:`send` hop after hop, chained through ``on_done``, with one clock event
        per hop instead of two: a hop's outcome is drawn when it starts, so the next hop is queued
        then, ready when this one has ended and the latency passed (the channel around the next
        node is held until this hop ends, so it cannot start earlier). ``record``: the datagram is
        an up frame of one sealed record that long, which relays on the way pack with others
        (mesh_sim/routes.py, SPEC.md §5.1); ``pace``: each relay on the way holds it that long
        to pack what arrives meanwhile (``path[0]`` too if ``pace_first``: a relay's own record)."""
        assert kind not in GROUP_KINDS  # (no group-link back-pressure: _hop_started skips on_idle)
        if len(path) < 2:
            done(True)
            return
        if not self.alive[path[0]]:
            done(False)
            return
        assert self._clock is not None
        route = Route(path, done, None if record is None else [record], pace if record is not None else 0.0)
        entry = (path[1], None, size, kind, Hop(route, 0), self._clock.now)
        if route.pace and pace_first:
            hold(self, path[0], entry)
        else:
            self._enqueue(path[0], entry)

    def _enqueue(
        self,
        src: int,
        entry: tuple[int, Burst | bytes | None, int | Shape, str, Callable[[bool], None] | None, float],
    ) -> None:
        q = self.queues[src]
        hop = entry[4]
        if type(hop) is Hop and hop.route.lengths is not None and q and pack(q, entry, self._room):
            return  # an up frame joined the one waiting here for the same parent (routes.py)
        q.append(entry)
        if entry[3] in GROUP_KINDS:
            self.group_queued[src] += 1
        if not self.busy[src]:
            self.busy[src] = True
            clock = self._clock
            assert clock is not None
            start = max(entry[5], self.channel_free[src])
            if start <= clock.now:  # idle, channel free: on air at once (the CSMA slot is in the airtime)
                self._start(src)
            else:
                clock._seq += 1  # clock.at, inlined (hot path; the time is always ahead of now)
                heappush(clock._heap, (start + self.profile.slot, clock._seq, self._start, (src,)))

    def send_burst(self, src: int, frames: Burst, *, kind: str = "data") -> None:
        """Queue broadcast frames that leave back to back, each one link frame (a block's PART
        frames, SPEC.md §3.2): one queue entry and one channel reservation, like the fragments of
        a datagram (a CSMA slot and the airtime of each frame), but each frame is lost or received
        on its own at each neighbour (one loss draw per frame and receiver)."""
        shape = self._burst_shape(frames)  # (a frame too big for one link frame: refused, not queued)
        if not self.alive[src]:
            return
        assert self._clock is not None
        clock = self._clock
        self.queues[src].append((BROADCAST, frames, shape, kind, None, clock.now))
        if kind in GROUP_KINDS:
            self.group_queued[src] += 1
        if not self.busy[src]:
            self.busy[src] = True
            start = self.channel_free[src]
            if start <= clock.now:
                self._start(src)
            else:
                clock._seq += 1
                heappush(clock._heap, (start + self.profile.slot, clock._seq, self._start, (src,)))

    def _burst_shape(self, frames: Burst) -> Shape:
        """:meth:`_shape` of a burst: one link frame per frame (network and MAC headers each)."""
        key = tuple(map(len, frames))
        g = self._geometry.get(key)
        if g is None:
            p = self.profile
            sizes = [n + p.net_header + p.mac_header for n in key]
            if max(sizes) > p.max_frame:
                raise ValueError(f"a burst frame of {max(key)} B does not fit one {p.name} frame")
            air = sum(p.airtime(f) + p.slot for f in sizes)
            g = (len(sizes), sum(sizes) + p.phy_overhead * len(sizes), air, air / len(sizes))
            self._geometry[key] = g
        return g

    def _shape(self, payload: int) -> Shape:
        """(fragments, bytes on air, airtime incl. CSMA slots, one fragment's mean airtime)."""
        g = self._geometry.get(payload)
        if g is None:
            p = self.profile
            sizes = p.frames_of(payload)
            air = sum(p.airtime(f) + p.slot for f in sizes)
            g = (len(sizes), sum(sizes) + p.phy_overhead * len(sizes), air, air / len(sizes))
            self._geometry[payload] = g
        return g

    def _neighbours(self, node: int) -> list[int]:
        """Neighbour ids, precomputed once per node (adjacency is fixed for a run)."""
        nbrs = self._nbrs[node]
        if nbrs is None:
            nbrs = self._nbrs[node] = [nb for nb, _loss in self.topo.adjacency[node]]
        return nbrs

    def _start(self, src: int) -> None:
        clock = self._clock
        assert clock is not None
        now = clock.now
        q = self.queues[src]
        if not self.alive[src] or not q:
            self._drop_queue(src)
            return
        free = self.channel_free
        if free[src] > now + 1e-12:  # a neighbour took the channel: back off behind it
            clock._seq += 1
            heappush(clock._heap, (free[src] + self.profile.slot, clock._seq, self._start, (src,)))
            return
        dst, _data, payload, kind, _done, _ready = q[0]
        frags, on_air, air, frag_air = payload if isinstance(payload, tuple) else self._shape(payload)
        delivered = True
        frames = frags
        if dst != BROADCAST:  # per-fragment link ACK and retries, drawn now (their airtime counts)
            p = self.profile
            if self.alive[dst]:
                to = self._loss_to[src]
                if to is None:  # (adjacency is fixed for a run, like _neighbours)
                    to = self._loss_to[src] = dict(self.topo.adjacency[src])
                loss = to[dst] if dst in to else self.topo.loss(src, dst)
            else:
                loss = 1.0
            ack = p.airtime(p.ack_bytes) + p.slot
            attempts = 0
            for _ in range(frags):
                for _try in range(p.mac_retries + 1):
                    attempts += 1
                    if not loss or self.rng.random() >= loss:
                        break
                else:
                    delivered = False
                    break
            extra = attempts - frags
            frames = attempts + (frags if delivered else 0)
            on_air += extra * (on_air // frags) + (frags if delivered else 0) * (p.ack_bytes + p.phy_overhead)
            air += extra * frag_air + (frags * ack if delivered else 0.0)
            self.rx_time[src] += frags * ack if delivered else 0.0
            if self.alive[dst]:
                self.rx_time[dst] += attempts * frag_air
        end = now + air
        free[src] = end
        self.last_tx_end[src] = end
        for nb in self._neighbours(src):
            if free[nb] < end:
                free[nb] = end
        self.frames_tx[src] += frames
        self.bytes_tx[src] += on_air
        self.tx_time[src] += air
        self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + on_air
        self.frames_by_kind[kind] = self.frames_by_kind.get(kind, 0) + frames
        if type(_done) is Hop:  # a routed datagram's hop: no end event (send_path)
            self._hop_started(src, dst, _done, delivered and self.alive[dst], end)
            return
        self._inflight[src] = (now, air, delivered, frags)
        clock._seq += 1
        heappush(clock._heap, (end, clock._seq, self._end, (src,)))

    def _hop_started(self, src: int, dst: int, hop: Hop, ok: bool, end: float) -> None:
        """A routed hop is on air until ``end`` with its outcome drawn: queue the next hop at
        ``dst`` (ready at ``end + hop_latency``), or call the route's ``done`` then; the sender's
        next datagram starts after ``end`` (what :meth:`_end` would have done at ``end``)."""
        clock = self._clock
        assert clock is not None
        q = self.queues[src]
        _dst, _data, size, kind, _h, _ready = q.popleft()
        route = hop.route
        path = route.path
        latency = self.profile.hop_latency
        if not ok:
            self.frames_lost += 1
            clock._seq += 1
            heappush(clock._heap, (end, clock._seq, route.done, (False,)))
        elif hop.i + 2 < len(path):
            hop.i += 1  # (the same object rides on: one per route)
            entry = (path[hop.i + 1], None, size, kind, hop, end + latency)
            if route.pace:  # an up frame the relay holds to pack with others (routes.hold)
                hold(self, dst, entry)
            else:
                self._enqueue(dst, entry)
        else:
            clock._seq += 1
            heappush(clock._heap, (end + latency, clock._seq, route.done, (True,)))
        if q:
            when = max(end, q[0][5]) + self.profile.slot
            clock._seq += 1
            heappush(clock._heap, (when, clock._seq, self._start, (src,)))
        else:
            self.busy[src] = False

    def _end(self, src: int) -> None:
        clock = self._clock
        assert clock is not None
        q = self.queues[src]
        if not q:
            self.busy[src] = False
            return
        dst, data, _payload, kind, on_done, _ready = q.popleft()
        group_room = False
        if kind in GROUP_KINDS:
            self.group_queued[src] -= 1
            group_room = self.group_queued[src] == 1  # a core held back by back-pressure may go on
        start, air, delivered, frags = self._inflight[src]
        if type(data) is tuple:
            if self.alive[src]:
                self._end_burst(src, data, start, air)
        elif dst == BROADCAST:
            if self.alive[src] and data is not None:
                rnd = self.rng.random
                alive = self.rx_on  # powered and awake (sleep)
                rx_time = self.rx_time
                end = start + air
                got: list[int] = []
                hear = self._hearing.get((src, frags))
                if hear is None:  # (neighbour, lossy, P(every fragment arrives)) once per sender and size
                    hear = self._hearing[(src, frags)] = [
                        (nb, bool(loss), (1.0 - loss) ** frags) for nb, loss in self.topo.adjacency[src]
                    ]
                if self.collisions:
                    busy = self.rx_busy_until
                    for nb, lossy, p_ok in hear:
                        if not alive[nb]:
                            continue
                        rx_time[nb] += air
                        if busy[nb] > start:
                            self.collided += 1
                            busy[nb] = max(busy[nb], end)
                            continue
                        busy[nb] = end
                        if lossy and rnd() >= p_ok:
                            self.frames_lost += 1
                            continue
                        got.append(nb)
                else:
                    lost = 0
                    for nb, lossy, p_ok in hear:
                        if not alive[nb]:
                            continue
                        rx_time[nb] += air
                        if lossy and rnd() >= p_ok:
                            lost += 1
                            continue
                        got.append(nb)
                    self.frames_lost += lost
                if self._deliver_all is not None:
                    if got:
                        self._deliver_all(got, src, data)  # type: ignore[arg-type]
                else:
                    deliver = self._deliver
                    for nb in got:
                        deliver(nb, src, data)  # type: ignore[arg-type]
        else:
            ok = delivered and self.alive[src] and self.alive[dst]
            if not ok:
                self.frames_lost += 1
            if ok and data is not None:
                self._deliver(dst, src, data)  # type: ignore[arg-type]
            if on_done is not None:
                on_done(ok)
        if q and self.alive[src]:
            ready = q[0][5]
            when = max(clock.now, self.channel_free[src], ready) + self.profile.slot
            clock._seq += 1
            heappush(clock._heap, (when, clock._seq, self._start, (src,)))
            if group_room:
                self._on_idle(src)
        else:
            self._drop_queue(src)
            self._on_idle(src)

    def _end_burst(self, src: int, frames: Burst, start: float, air: float) -> None:
        """A burst ended: each neighbour loses each frame on its own (probability: the link's
        loss) and gets the frames that arrived (the burst's own tuple when all did); a hidden
        terminal (``collisions``) loses the whole burst there. The lost frames are drawn as gaps
        between losses (geometric, one draw per loss and one more, not one per frame: the same
        independent per-frame losses)."""
        rnd = self.rng.random
        alive = self.rx_on  # powered and awake (sleep)
        rx_time = self.rx_time
        end = start + air
        n = len(frames)
        hear = self._gaps.get(src)
        if hear is None:  # (neighbour, log(1 - loss); 0.0: lossless)
            hear = self._gaps[src] = [
                (nb, math.log(1.0 - loss) if loss < 1.0 else -math.inf)
                for nb, loss in self.topo.adjacency[src]
            ]
        busy = self.rx_busy_until if self.collisions else None
        got: list[tuple[int, Sequence[bytes]]] = []
        lost = 0
        log = math.log
        for nb, q in hear:
            if not alive[nb]:
                continue
            rx_time[nb] += air
            if busy is not None:
                if busy[nb] > start:
                    self.collided += n
                    busy[nb] = max(busy[nb], end)
                    continue
                busy[nb] = end
            if q:
                pos = int(log(1.0 - rnd()) / q)  # frames received before the first lost one
                if pos < n:
                    heard: list[bytes] = list(frames[:pos])
                    while pos < n:
                        lost += 1
                        nxt = pos + 1 + int(log(1.0 - rnd()) / q)
                        heard += frames[pos + 1 : nxt]
                        pos = nxt
                    if heard:
                        got.append((nb, heard))
                    continue
            got.append((nb, frames))
        self.frames_lost += lost
        if not got:
            return
        if self._deliver_burst is not None:
            self._deliver_burst(got, src, frames)
        else:
            deliver = self._deliver
            for nb, heard_frames in got:
                for f in heard_frames:
                    deliver(nb, src, f)

    def _drop_queue(self, src: int) -> None:
        q = self.queues[src]
        self.busy[src] = False
        while q:
            _dst, _data, _size, kind, on_done, _ready = q.popleft()
            if kind in GROUP_KINDS:
                self.group_queued[src] -= 1
            if on_done is not None:
                on_done(False)

    # -- one transmission --------------------------------------------------------------------
    def _occupy(self, src: int, frame_bytes: int, now: float) -> tuple[float, float]:
        """Reserve the channel around ``src``; return (start, end) of the frame (control plane)."""
        p = self.profile
        air = p.airtime(frame_bytes)
        start = max(now, self.channel_free[src]) + p.slot
        end = start + air
        self.frames_tx[src] += 1
        self.bytes_tx[src] += frame_bytes + p.phy_overhead
        self.bytes_by_kind["control"] = self.bytes_by_kind.get("control", 0) + frame_bytes + p.phy_overhead
        self.frames_by_kind["control"] = self.frames_by_kind.get("control", 0) + 1
        self.tx_time[src] += air
        free = self.channel_free
        free[src] = end
        for nb, _loss in self.topo.adjacency[src]:
            if free[nb] < end:
                free[nb] = end
        return start, end

    def unicast(self, src: int, dst: int, frame_bytes: int, now: float) -> tuple[float, bool]:
        """One frame with link ACK and up to ``mac_retries`` retransmissions: (end time, delivered)."""
        p = self.profile
        loss = self.topo.loss(src, dst)
        t = now
        for _attempt in range(p.mac_retries + 1):
            start, end = self._occupy(src, frame_bytes, t)
            if self.alive[dst]:
                self.rx_time[dst] += end - start
            if self.alive[dst] and not (loss and self.rng.random() < loss):
                ack_start, ack_end = self._occupy(dst, p.ack_bytes, end)
                self.rx_time[src] += ack_end - ack_start
                return ack_end, True
            self.frames_lost += 1
            t = end + p.airtime(p.ack_bytes)  # ACK timeout
        return t, False

    def unicast_path(self, path: Sequence[int], frame_bytes: int, now: float) -> tuple[float, bool]:
        """Hop by hop along ``path`` (first element sends); stops at the first hop that fails."""
        t = now
        for a, b in pairwise(path):
            t, ok = self.unicast(a, b, frame_bytes, t)
            if not ok:
                return t, False
            t += self.profile.hop_latency
        return t, True

    # -- totals -------------------------------------------------------------------------------
    def frames_for(self, payload: int, per_frame_payload: int) -> int:
        return max(1, math.ceil(payload / per_frame_payload))
