"""A root's progress report of one group stream (root → server; wire/SPEC.md §7).

A root (any node running a :class:`~firmware_proto.group_stream.GroupStreamRoot`: the elected root
or a relay streaming to its children) reports, per stream, what it saw: its members (device ids as
the root knows them), per member the blocks it still misses as its last NACK said, and the bytes
and frames the root put on air for that stream. The server keeps the newest report per (root,
stream) and shows it as *reported by* that root: the root is not trusted for any of it.

Record (all integers big endian)::

    0x4D ('M') || version 1 (1) || stream id (8) || flags (1) || rounds (u16) || blocks (u32)
      || bytes on air (u32) || frames on air (u32) || members (u16)
      || len(artifact id) (1) || artifact id || len(artifact name) (1) || artifact name
      || n (1: 0..MAX_NODES) || n × (len(device id) (1) || device id || state (1) || missing (u32))

``members``: how many nodes are in the stream (at most the first ``MAX_NODES`` are listed).
``flags``: bit 0 the stream has ended, bit 1 it ended complete. ``state``: 0 receiving, 1 done,
2 no NACK heard yet (missing unknown: reported as ``blocks``), 3 needs the head.
Ids are 1..64 bytes of ``[0-9A-Za-z._:-]``; the artifact name is 1..128 bytes of UTF-8 without
control characters.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from wire.errors import WireError

__all__ = [
    "FINAL",
    "FINAL_COMPLETE",
    "MAX_NODES",
    "MAX_RECORD",
    "MESH_MAGIC",
    "NODE_DONE",
    "NODE_NEEDS_HEAD",
    "NODE_RECEIVING",
    "NODE_STATES",
    "NODE_UNKNOWN",
    "MeshNode",
    "MeshReport",
    "MeshReportError",
    "decode_mesh_report",
    "encode_mesh_report",
]

MESH_MAGIC = 0x4D
MAX_NODES = 128  # listed per report; ``members`` counts all of them
FINAL = 0x01
FINAL_COMPLETE = 0x02
NODE_RECEIVING, NODE_DONE, NODE_UNKNOWN, NODE_NEEDS_HEAD = 0, 1, 2, 3
NODE_STATES = ("receiving", "done", "unknown", "needs-head")
_HEAD = struct.Struct(">BB8sBHIIIH")
_NODE_TAIL = struct.Struct(">BI")
_ID = re.compile(r"[0-9A-Za-z._:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_RECORD = _HEAD.size + 65 + 129 + 1 + MAX_NODES * (65 + _NODE_TAIL.size)


class MeshReportError(WireError):
    """Bytes that are not a valid mesh report (or a report that cannot be encoded)."""


@dataclass(frozen=True, slots=True)
class MeshNode:
    device_id: str
    state: int
    missing: int


@dataclass(frozen=True, slots=True)
class MeshReport:
    stream_id: bytes
    artifact_id: str
    artifact_name: str
    flags: int
    rounds: int
    blocks: int
    bytes_on_air: int
    frames_on_air: int
    members: int
    nodes: tuple[MeshNode, ...]

    @property
    def final(self) -> bool:
        return bool(self.flags & FINAL)

    @property
    def complete(self) -> bool:
        return bool(self.flags & FINAL_COMPLETE)


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise MeshReportError(f"{what}: expected 1..64 of [0-9A-Za-z._:-], got {value!r}")
    return value


def _check_name(value: object) -> str:
    if not isinstance(value, str) or _CONTROL.search(value) or not 1 <= len(value.encode()) <= 128:
        msg = f"artifact name: 1..128 bytes without control characters expected, got {value!r}"
        raise MeshReportError(msg)
    return value


def _u(value: int, bits: int, what: str) -> int:
    if not 0 <= value < 1 << bits:
        raise MeshReportError(f"{what} {value} out of range (u{bits})")
    return value


def encode_mesh_report(rep: MeshReport) -> bytes:
    if len(rep.stream_id) != 8:
        raise MeshReportError(f"stream id of {len(rep.stream_id)} bytes (8 expected)")
    if len(rep.nodes) > MAX_NODES or len(rep.nodes) > rep.members:
        raise MeshReportError(f"{len(rep.nodes)} nodes listed ({rep.members} members, at most {MAX_NODES})")
    if rep.flags & ~(FINAL | FINAL_COMPLETE) or rep.flags == FINAL_COMPLETE:
        raise MeshReportError(f"flags 0x{rep.flags:02x}")
    out = bytearray(
        _HEAD.pack(
            MESH_MAGIC, 1, rep.stream_id, rep.flags, _u(rep.rounds, 16, "rounds"),
            _u(rep.blocks, 32, "blocks"),
            _u(rep.bytes_on_air, 32, "bytes on air"), _u(rep.frames_on_air, 32, "frames on air"),
            _u(rep.members, 16, "members"),
        )
    )  # fmt: skip
    for raw in (_check_id(rep.artifact_id, "artifact id").encode(), _check_name(rep.artifact_name).encode()):
        out += bytes([len(raw)]) + raw
    out.append(len(rep.nodes))
    if len({n.device_id for n in rep.nodes}) != len(rep.nodes):
        raise MeshReportError("a node listed twice")
    for n in rep.nodes:
        raw = _check_id(n.device_id, "device id").encode()
        if n.state not in range(len(NODE_STATES)):
            raise MeshReportError(f"node state {n.state}")
        out += bytes([len(raw)]) + raw + _NODE_TAIL.pack(n.state, _u(n.missing, 32, "missing"))
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def text(self, what: str) -> str:
        n = self.data[self.at] if self.at < len(self.data) else 0
        raw = self.data[self.at + 1 : self.at + 1 + n]
        if n == 0 or len(raw) != n:
            raise MeshReportError(f"mesh report: {what} empty or truncated")
        self.at += 1 + n
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise MeshReportError(f"mesh report: {what} not UTF-8") from None


def decode_mesh_report(data: bytes) -> MeshReport:
    if not _HEAD.size < len(data) <= MAX_RECORD:
        raise MeshReportError(f"mesh report of {len(data)} bytes (at most {MAX_RECORD})")
    magic, ver, sid, flags, rounds, blocks, on_air, frames, members = _HEAD.unpack_from(data)
    if magic != MESH_MAGIC or ver != 1:
        raise MeshReportError(f"not a version 1 mesh report (0x{magic:02x} {ver})")
    if flags & ~(FINAL | FINAL_COMPLETE) or flags == FINAL_COMPLETE:
        raise MeshReportError(f"mesh report: flags 0x{flags:02x}")
    r = _Reader(data, _HEAD.size)
    artifact_id = _check_id(r.text("artifact id"), "artifact id")
    artifact_name = _check_name(r.text("artifact name"))
    if r.at >= len(data):
        raise MeshReportError("mesh report: node count missing")
    count = data[r.at]
    r.at += 1
    if count > MAX_NODES or count > members:
        raise MeshReportError(f"mesh report: {count} nodes listed ({members} members, at most {MAX_NODES})")
    nodes = []
    seen: set[str] = set()
    for _ in range(count):
        device_id = _check_id(r.text("device id"), "device id")
        if r.at + _NODE_TAIL.size > len(data):
            raise MeshReportError("mesh report: node truncated")
        state, missing = _NODE_TAIL.unpack_from(data, r.at)
        r.at += _NODE_TAIL.size
        if state >= len(NODE_STATES):
            raise MeshReportError(f"mesh report: node state {state}")
        if device_id in seen:
            raise MeshReportError(f"mesh report: node {device_id} listed twice")
        seen.add(device_id)
        nodes.append(MeshNode(device_id, state, missing))
    if r.at != len(data):
        raise MeshReportError("mesh report: trailing bytes")
    return MeshReport(
        sid, artifact_id, artifact_name, flags, rounds, blocks, on_air, frames, members, tuple(nodes)
    )
