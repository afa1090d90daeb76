"""What one run of a scenario leaves behind: the parts the metrics read, the trace hash, the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .clock import EventClock
from .control import ControlPlane
from .election import MeshTree
from .group import GroupSim
from .radio import Radio
from .scenario import Scenario
from .topology import Topology

__all__ = ["RunResult"]


@dataclass
class RunResult:
    scenario: Scenario
    topology: Topology
    tree: MeshTree  # as elected at the start
    radio: Radio
    stream: GroupSim
    control: ControlPlane | None
    stream_start: float
    trace_hash: str
    wall_s: float
    clock: EventClock
    summary: dict[str, Any] = field(default_factory=dict)
