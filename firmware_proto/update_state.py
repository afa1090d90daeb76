"""The update agent's vocabulary: states and their transition table, the persisted job record,
the actions it asks its driver for, and its configuration (see :mod:`firmware_proto.update_agent`).

Record ``agent`` (SPEC.md §4) is :class:`Job`: state u8, attempts u8, target slot u8, deployment,
artifact id, name (u8 length + UTF-8 each), uri (u16 length + UTF-8).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = [
    "FINAL_STATUSES",
    "MAX_INSTALL_ATTEMPTS",
    "TRANSITIONS",
    "Action",
    "AgentConfig",
    "AgentState",
    "FetchMap",
    "FetchRange",
    "Job",
    "Reboot",
    "ReportStatus",
]


class AgentState(IntEnum):
    IDLE = 0
    LEARNED = 1
    REQUESTED = 2
    RECEIVING = 3
    VERIFYING = 4
    INSTALLING = 5
    REBOOTING = 6
    COMMITTING = 7
    ROLLING_BACK = 8
    AWAITING_CONSENT = 9  # ask-first: nothing downloaded before the owner says yes
    AWAITING_INSTALL = 10  # verified image held; waits for a window (and download-then-ask consent)


_S = AgentState
TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    _S.IDLE: frozenset({_S.LEARNED, _S.IDLE}),
    _S.LEARNED: frozenset({_S.REQUESTED, _S.AWAITING_CONSENT, _S.IDLE}),
    _S.AWAITING_CONSENT: frozenset({_S.REQUESTED, _S.IDLE}),
    _S.REQUESTED: frozenset({_S.RECEIVING, _S.IDLE}),
    _S.RECEIVING: frozenset({_S.VERIFYING, _S.IDLE}),
    _S.VERIFYING: frozenset({_S.INSTALLING, _S.AWAITING_INSTALL, _S.IDLE}),
    _S.AWAITING_INSTALL: frozenset({_S.INSTALLING, _S.IDLE}),
    _S.INSTALLING: frozenset({_S.REBOOTING, _S.IDLE}),
    _S.REBOOTING: frozenset({_S.COMMITTING, _S.ROLLING_BACK, _S.INSTALLING, _S.IDLE}),
    _S.COMMITTING: frozenset({_S.IDLE, _S.INSTALLING}),
    _S.ROLLING_BACK: frozenset({_S.IDLE}),
}
FINAL_STATUSES = ("success", "failure", "already-installed")
MAX_INSTALL_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ReportStatus:
    deployment_id: str
    status: str
    substate: str | None = None  # e.g. "awaiting window", "awaiting consent"


@dataclass(frozen=True, slots=True)
class FetchMap:
    artifact_id: str
    chunk_size: int


@dataclass(frozen=True, slots=True)
class FetchRange:
    uri: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Reboot:
    pass


Action = ReportStatus | FetchMap | FetchRange | Reboot


@dataclass(frozen=True, slots=True)
class AgentConfig:
    map_key: ed25519.Ed25519PublicKey
    image_ok: Callable[[bytes], bool]  # the vendor signature check over the whole artifact
    health_check: Callable[[], bool] = lambda: True  # run in the trial boot before committing
    want_interval: float = 2.0
    # WANT back-off cap: without stream progress the pause between WANTs doubles from want_interval
    # up to this (UpdateAgent._send_want); a value <= want_interval keeps the pause fixed
    want_max: float = 60.0
    fallback_timeout: float = 10.0
    fallback_chunk_size: int = 1024
    fallback_range_bytes: int = 16384
    fallback_parallel: int = 4
    nack_max_bytes: int = 128
    # parts (SPEC.md §3.2): at most this many partly held blocks named per NACK (the bitmap is cut
    # before the next one, asked for in a later round)
    nack_max_parts: int = 24


@dataclass(slots=True)
class Job:
    """Record ``agent``: state u8, attempts u8, target slot u8, deployment, artifact id, name, uri."""

    state: AgentState = AgentState.IDLE
    attempts: int = 0
    target: int = 1
    deployment_id: str = ""
    artifact_id: str = ""
    artifact_name: str = ""
    uri: str = ""

    def encode(self) -> bytes:
        out = bytes([self.state, self.attempts, self.target])
        for text in (self.deployment_id, self.artifact_id, self.artifact_name):
            raw = text.encode()
            out += bytes([len(raw)]) + raw
        uri = self.uri.encode()
        return out + struct.pack(">H", len(uri)) + uri

    @classmethod
    def decode(cls, data: bytes) -> Job:
        job = cls(AgentState(data[0]), data[1], data[2])
        pos = 3
        texts = []
        for _ in range(3):
            n = data[pos]
            texts.append(data[pos + 1 : pos + 1 + n].decode())
            pos += 1 + n
        (n,) = struct.unpack_from(">H", data, pos)
        job.deployment_id, job.artifact_id, job.artifact_name = texts
        job.uri = data[pos + 2 : pos + 2 + n].decode()
        return job
