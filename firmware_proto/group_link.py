"""The group link: how a root and its nodes exchange frames, whatever carries them.

A core is given a :class:`GroupLink` and calls ``send_broadcast(frame)`` /
``send_unicast(node, frame)``; whoever drives the core delivers incoming frames by calling the
core's ``receive(frame, sender, now)``. A link may also take ``send_burst(frames)``: broadcast
frames that leave back to back (a block's PART frames, SPEC.md §3.2), as a radio driver queues the
fragments of one datagram; a core calls it where the link has it, else ``send_broadcast`` per
frame; the frames on air are the same. Implementations: :class:`LinkOutbox` (buffers, for a
driver to drain), the simulator's radio (mesh_sim), :mod:`firmware_proto.aio.group_udp` (UDP
multicast), and :class:`firmware_proto.testing.medium.MemoryMedium` (a seeded lossy broadcast
medium on virtual time, for tests).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["GroupLink", "LinkOutbox"]


class GroupLink(Protocol):
    def send_broadcast(self, frame: bytes) -> None: ...
    def send_unicast(self, node: Hashable, frame: bytes) -> None: ...


@dataclass(slots=True)
class LinkOutbox:
    """Buffers what a core sends: ``(None, frame)`` for broadcast, ``(node, frame)`` for unicast."""

    sent: list[tuple[Hashable | None, bytes]] = field(default_factory=list)

    def send_broadcast(self, frame: bytes) -> None:
        self.sent.append((None, frame))

    def send_unicast(self, node: Hashable, frame: bytes) -> None:
        self.sent.append((node, frame))

    def drain(self) -> list[tuple[Hashable | None, bytes]]:
        out, self.sent = self.sent, []
        return out
