"""A simulated node's state and its group link (mesh_sim/group.py drives both)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware_proto.group_forwarder import GroupRelay
from firmware_proto.group_stream import GroupStreamRoot
from firmware_proto.update_agent import UpdateAgent

from .flash import SharedSlotFlash
from .radio import BROADCAST

if TYPE_CHECKING:
    from .group import GroupSim

__all__ = ["GroupLink", "SimNode"]


@dataclass(slots=True)
class SimNode:
    flash: SharedSlotFlash
    agent: UpdateAgent | None = None
    relay: GroupRelay | None = None
    root: GroupStreamRoot | None = None
    timer_gen: int = 0  # bumped when the node's cores go (GroupSim._retire): older wake-ups are void
    timer_at: float = math.inf  # the earliest wake-up the cores asked for
    queued: set[float] = field(default_factory=set)  # times of this generation's wake-ups on the clock
    fires_now: int = 0
    final: str | None = None
    success_at: float | None = None
    boots: int = 0
    down: bool = False
    root_streaming: bool = False  # the root core fetched an artifact and has not finished its stream
    reboot_deferred: bool = False  # the agent asked to reboot while its root core was streaming
    events: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)  # statuses in the order the agent reported them


class GroupLink:
    """A node's group link: frames go on air as broadcast datagrams (a root also hears its own)."""

    def __init__(self, sim: GroupSim, node: int, tap: Callable[[bytes], bytes | None] | None = None) -> None:
        self.sim = sim
        self.node = node
        self.tap = tap

    def _tapped(self, frame: bytes) -> bytes | None:
        return frame if self.tap is None else self.tap(frame)

    def send_broadcast(self, frame: bytes) -> None:
        tapped = self._tapped(frame)
        if tapped is not None:
            self.sim.transmit(self.node, BROADCAST, tapped)

    def send_burst(self, frames: list[bytes]) -> None:
        """A block's PART frames, back to back (``GroupStreamRoot`` sends them so): one radio
        queue entry, each frame lost or received on its own (``Radio.send_burst``)."""
        if not self.sim.params.bursts:  # the model before bursts: each part its own datagram
            for f in frames:
                self.send_broadcast(f)
            return
        if self.tap is not None:
            frames = [t for f in frames if (t := self.tap(f)) is not None]
        if frames:
            self.sim.transmit_burst(self.node, tuple(frames))

    def send_unicast(self, node: Hashable, frame: bytes) -> None:
        assert isinstance(node, int)
        tapped = self._tapped(frame)
        if tapped is None:
            return
        if node == self.node:  # a root's own agent: handed over inside the node, not on air
            self.sim.clock.after(0.0, self.sim._deliver, node, node, tapped)
        else:
            self.sim.transmit(self.node, node, tapped)
