"""When a root reports its streams' progress to the server (sans-I/O; record: wire/mesh_report.py).

:class:`MeshReporter` watches one :class:`~firmware_proto.group_stream.GroupStreamRoot` and says
when a report is due: for a running stream at most once per ``interval`` seconds (and only when
something changed since the last one), and once when the stream ended. The driver sends each
record as the body of ``POST /api/meshota/v1/devices/mesh/report`` over the root's own
end-to-end session, and drops it when that fails (the next one carries the newer state anyway).

Nodes are named by ``name_of(link address)``: the device id the root knows for that neighbour (a
driver's table). At most :data:`~wire.mesh_report.MAX_NODES` are listed per report, those with the
most missing blocks first, then done ones; ``members`` counts them all. A transport that carries
less than :data:`~wire.mesh_report.MAX_RECORD` bytes per call (MQTT-SN: one datagram) sets
``max_bytes``: the list is cut to fit (done nodes go first), ``members`` still counts them all.
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

_NODE_FIXED = 1 + 5  # length byte, state, missing (u32)

__all__ = ["MeshReporter", "report_of"]

_U32 = (1 << 32) - 1


def report_of(
    p: StreamProgress, name_of: Callable[[Hashable], str], max_bytes: int | None = None
) -> MeshReport:
    """The record for one stream's progress (members beyond ``MAX_NODES``, or beyond what fits in
    ``max_bytes`` encoded, only counted)."""
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
    listed = nodes[:MAX_NODES]
    if max_bytes is not None:
        room = max_bytes - len(encode_mesh_report(_report(p, flags, ())))
        keep = 0
        for n in listed:
            room -= _NODE_FIXED + len(n.device_id.encode())
            if room < 0:
                break
            keep += 1
        listed = listed[:keep]
    return _report(p, flags, tuple(listed))


def _report(p: StreamProgress, flags: int, nodes: tuple[MeshNode, ...]) -> MeshReport:
    return MeshReport(
        p.stream_id, p.artifact_id, p.artifact_name, flags, min(p.rounds, 0xFFFF), min(p.blocks, _U32),
        min(p.bytes_on_air, _U32), min(p.frames_on_air, _U32), min(len(p.members), 0xFFFF),
        nodes,
    )  # fmt: skip


class MeshReporter:
    def __init__(
        self,
        core: GroupStreamRoot,
        interval: float,
        name_of: Callable[[Hashable], str],
        *,
        max_bytes: int | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"report interval {interval} s: must be > 0")
        self.core = core
        self.max_bytes = max_bytes  # the transport's room per report (None: MAX_RECORD)
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
            rep = report_of(p, self.name_of, self.max_bytes)
            if last is not None and rep == last[1]:
                continue  # nothing new since the last report
            self._sent[p.stream_id] = (now, rep)
            out.append(encode_mesh_report(rep))
        return out
