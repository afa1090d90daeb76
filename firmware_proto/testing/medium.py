"""A seeded lossy broadcast medium on virtual time: group-link members for tests and harnesses.

Each member gets a :class:`MemberLink` (a :class:`firmware_proto.group_link.GroupLink`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["MediumCounters", "MemberLink", "MemoryMedium"]


@dataclass(slots=True)
class MediumCounters:
    frames: int = 0
    bytes: int = 0


class MemoryMedium:
    """One broadcast domain: every frame reaches every other member, each copy lost with ``loss``.

    ``tap(sender, frame) -> frame | None`` may rewrite or drop a frame a given sender sends (tests
    use it to make a root malicious). Deliveries are queued with ``latency`` and handed out by
    :meth:`deliveries_due`; ``sent[member]`` counts what each member put on the air.
    """

    def __init__(self, rng: random.Random, loss: float = 0.0, latency: float = 0.001) -> None:
        self.rng = rng
        self.loss = loss
        self.latency = latency
        self.members: list[Hashable] = []
        self.sent: dict[Hashable, MediumCounters] = {}
        self.taps: dict[Hashable, Callable[[bytes], bytes | None]] = {}
        self.queue: list[tuple[float, int, Hashable, Hashable, bytes]] = []
        self._seq = 0
        self.now = 0.0

    def join(self, member: Hashable) -> MemberLink:
        self.members.append(member)
        self.sent.setdefault(member, MediumCounters())
        return MemberLink(self, member)

    def leave(self, member: Hashable) -> None:
        self.members.remove(member)
        self.queue = [q for q in self.queue if q[3] != member]

    def _send(self, sender: Hashable, to: Hashable | None, frame: bytes) -> None:
        tap = self.taps.get(sender)
        if tap is not None:
            tapped = tap(frame)
            if tapped is None:
                return
            frame = tapped
        counters = self.sent[sender]
        counters.frames += 1
        counters.bytes += len(frame)
        targets = [m for m in self.members if m != sender] if to is None else [to]
        for target in targets:
            if target in self.members and self.rng.random() >= self.loss:
                self._seq += 1
                self.queue.append((self.now + self.latency, self._seq, sender, target, frame))

    def next_delivery(self) -> float | None:
        return min((q[0] for q in self.queue), default=None)

    def deliveries_due(self, now: float) -> list[tuple[Hashable, Hashable, bytes]]:
        due = sorted(q for q in self.queue if q[0] <= now)
        self.queue = [q for q in self.queue if q[0] > now]
        return [(sender, target, frame) for _, _, sender, target, frame in due]


@dataclass(slots=True)
class MemberLink:
    medium: MemoryMedium
    member: Hashable

    def send_broadcast(self, frame: bytes) -> None:
        self.medium._send(self.member, None, frame)

    def send_unicast(self, node: Hashable, frame: bytes) -> None:
        self.medium._send(self.member, node, frame)
