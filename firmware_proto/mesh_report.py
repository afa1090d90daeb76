"""When a root reports its streams' progress to the server (sans-I/O; record: wire/mesh_report.py).

:class:`MeshReporter` watches one :class:`~firmware_proto.group_stream.GroupStreamRoot` and says
when a report is due: for a running stream at most once per ``interval`` seconds (and only when
something changed since the last one), and once when the stream ended. The driver sends each
record as the body of ``POST /api/meshota/v1/devices/mesh/report`` over the root's own
end-to-end session, and drops it when that fails (the next one carries the newer state anyway).

Nodes are named by ``name_of(link address)``: the device id the root knows for that neighbour (a
driver's table). At most :data:`~wire.mesh_report.MAX_NODES` are listed per report, those with the
most missing blocks first, then done ones; ``members`` counts them all.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from firmware_proto.group_stream import GroupStreamRoot, StreamProgress
from wire.mesh_report import (
    FINAL,
    FINAL_COMPLETE,
    MAX_NODES,
    NODE_DONE,
    NODE_RECEIVING,
    NODE_UNKNOWN,
    MeshNode,
    MeshReport,
    encode_mesh_report,
)

__all__ = ["MeshReporter", "report_of"]

_U32 = (1 << 32) - 1


def report_of(p: StreamProgress, name_of: Callable[[Hashable], str]) -> MeshReport:
    """The record for one stream's progress (members beyond ``MAX_NODES`` only counted)."""
    nodes = []
    for member in p.members:
        if member in p.done:
            state, missing = NODE_DONE, 0
        elif member in p.missing:
            state, missing = NODE_RECEIVING, p.missing[member]
        else:
            state, missing = NODE_UNKNOWN, p.blocks
        nodes.append(MeshNode(name_of(member), state, min(missing, _U32)))
    nodes.sort(key=lambda n: (n.state == NODE_DONE, -n.missing, n.device_id))
    flags = (FINAL | (FINAL_COMPLETE if p.complete else 0)) if p.finished else 0
    return MeshReport(
        p.stream_id, p.artifact_id, p.artifact_name, flags, min(p.rounds, 0xFFFF), min(p.blocks, _U32),
        min(p.bytes_on_air, _U32), min(p.frames_on_air, _U32), min(len(p.members), 0xFFFF),
        tuple(nodes[:MAX_NODES]),
    )  # fmt: skip


class MeshReporter:
    def __init__(self, core: GroupStreamRoot, interval: float, name_of: Callable[[Hashable], str]) -> None:
        if interval <= 0:
            raise ValueError(f"report interval {interval} s: must be > 0")
        self.core = core
        self.interval = interval
        self.name_of = name_of
        # stream id → (when, what) last sent; as many as the core keeps streams (one per artifact)
        self._sent: dict[bytes, tuple[float, MeshReport]] = {}

    def next_timer(self) -> float | None:
        """When a running stream's next report may go (None: no stream running)."""
        due = [
            self._sent[p.stream_id][0] + self.interval if p.stream_id in self._sent else 0.0
            for p in self.core.progress()
            if not p.finished
        ]
        return min(due) if due else None

    def due(self, now: float) -> list[bytes]:
        """The records to send now (encoded), at most one per stream."""
        out = []
        for p in self.core.progress():
            last = self._sent.get(p.stream_id)
            if last is not None and last[1].final:
                continue  # its end was reported
            if not p.finished and last is not None and now < last[0] + self.interval:
                continue
            rep = report_of(p, self.name_of)
            if last is not None and rep == last[1]:
                continue  # nothing new since the last report
            self._sent[p.stream_id] = (now, rep)
            out.append(encode_mesh_report(rep))
        return out
