"""Radio model: airtime, per-link loss, MAC retries for unicast, none for broadcast, channel sharing.

A transmission occupies the sender and every neighbour's channel for its airtime (carrier sense:
the next sender in that neighbourhood waits), so frames in one neighbourhood serialise while
distant parts of the mesh transmit in parallel. With ``collisions`` on, a frame reaching a node
that is already receiving another (a hidden terminal) is lost there.

Accounting is per node: frames and bytes on air (PHY overhead included), tx and rx airtime, and
energy = (tx time × tx current + rx time × rx current) × supply voltage.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from .topology import Topology

__all__ = ["PROFILES", "Radio", "RadioProfile"]


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

    def payload_room(self) -> int:
        """Bytes an upper layer (MQTT-SN datagram) may put in one frame."""
        return self.max_frame - self.mac_header - self.net_header

    def airtime(self, frame_bytes: int) -> float:
        return (frame_bytes + self.phy_overhead) * 8.0 / self.bitrate


PROFILES: dict[str, RadioProfile] = {
    # 802.15.4 2.4 GHz O-QPSK: 250 kbit/s, PSDU <= 127 B, 6 B SHR+PHR, MAC 9 + FCS 2, IPHC ~7 + UDP-NHC 4,
    # ACK 5 B, macMaxFrameRetries 3, mean BE=3 backoff 1.12 ms + CCA/turnaround 0.32 ms; nRF52840 ~5-6 mA.
    "802.15.4": RadioProfile(
        "802.15.4", 250_000, 127, 6, 11, 11, 5, 3, 0.00144, 0.002, tx_current_ma=6.4, rx_current_ma=6.3
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
        self.channel_free = [0.0] * n  # when this node's neighbourhood channel is free
        self.rx_busy_until = [0.0] * n
        self.frames_tx = [0] * n
        self.bytes_tx = [0] * n
        self.tx_time = [0.0] * n
        self.rx_time = [0.0] * n
        self.frames_lost = 0
        self.collided = 0

    # -- one transmission --------------------------------------------------------------------
    def _occupy(self, src: int, frame_bytes: int, now: float) -> tuple[float, float]:
        """Reserve the channel around ``src``; return (start, end) of the frame."""
        p = self.profile
        air = p.airtime(frame_bytes)
        start = max(now, self.channel_free[src]) + p.slot
        end = start + air
        self.frames_tx[src] += 1
        self.bytes_tx[src] += frame_bytes + p.phy_overhead
        self.tx_time[src] += air
        free = self.channel_free
        free[src] = end
        for nb, _loss in self.topo.adjacency[src]:
            if free[nb] < end:
                free[nb] = end
        return start, end

    def broadcast(self, src: int, frame_bytes: int, now: float) -> tuple[float, list[int]]:
        """One broadcast frame, no ACK, no retry: (end time, neighbours that received it)."""
        start, end = self._occupy(src, frame_bytes, now)
        air = end - start
        got: list[int] = []
        rnd = self.rng.random
        alive = self.alive
        rx_time = self.rx_time
        collisions = self.collisions
        busy = self.rx_busy_until
        for nb, loss in self.topo.adjacency[src]:
            if not alive[nb]:
                continue
            rx_time[nb] += air
            if collisions:
                if busy[nb] > start:
                    self.collided += 1
                    busy[nb] = max(busy[nb], end)
                    continue
                busy[nb] = end
            if loss and rnd() < loss:
                self.frames_lost += 1
                continue
            got.append(nb)
        return end, got

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
    def energy_mj(self, node: int) -> float:
        p = self.profile
        return (self.tx_time[node] * p.tx_current_ma + self.rx_time[node] * p.rx_current_ma) * p.voltage

    def frames_for(self, payload: int, per_frame_payload: int) -> int:
        return max(1, math.ceil(payload / per_frame_payload))
