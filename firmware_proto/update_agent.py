"""The node's update agent (sans-I/O): learn a deployment, receive the stream, verify, install, commit.

States (persisted in record ``agent``, SPEC.md §4), one table,
:data:`~firmware_proto.update_state.TRANSITIONS`::

    IDLE → LEARNED → REQUESTED → RECEIVING → VERIFYING → INSTALLING → REBOOTING → COMMITTING → IDLE
             │      ↑                └──────────(bad image)──┘  ↑           └→ ROLLING_BACK → IDLE
             └→ AWAITING_CONSENT         VERIFYING → AWAITING_INSTALL

Install windows and consent (:class:`wire.install_policy.InstallPolicy`, from ``next``'s
``meshota.install``): ``ask-first`` waits in AWAITING_CONSENT before it asks for a single byte;
every policy downloads whenever it can but installs only inside a window, ``download-then-ask``
and ``ask-first`` only with the owner's consent (:meth:`consent`). Both waits are reported as
``pause_before_installing`` with substate ``awaiting consent`` / ``awaiting window``; a fresh
policy (the same deployment learned again) replaces the stored one (record ``policy``).

Inputs: :meth:`deployment_learned` (from the node's own end-to-end ``next``), group-link frames
(:meth:`receive`), fallback fetch results (:meth:`map_fetched`, :meth:`range_fetched`), delivery
acknowledgements (:meth:`status_delivered`), and :meth:`handle_timer`. Outputs: frames through the
:class:`GroupLink` it was given, and :meth:`actions` — :class:`ReportStatus`, :class:`FetchMap`,
:class:`FetchRange`, :class:`Reboot` — that the driver carries out. States, the job record,
actions and :class:`AgentConfig` are defined in :mod:`firmware_proto.update_state`.

WANT timing: a node asks at once (REQUESTED, or RECEIVING without progress), then again while
nobody streams to it, with a Trickle-like back-off (RFC 6206): the pause before the next WANT is
the time since its last stream progress, at least ``want_interval`` and at most ``want_max``
(0, 5, 10, 20, 40, ... s with 5 s), so a node waiting out a long collection window does not fill
the air; progress, a new deployment, a boot and END(complete) without it start again at
``want_interval`` (END(complete) also sends one at once).

A power cut anywhere leaves flash in a state :meth:`start` resumes from (a new agent over the same
flash, after :func:`firmware_proto.boot.boot`). The final Mender status of a deployment is kept in
record ``report`` until the driver confirms it was delivered.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from firmware_proto import boot as bootmod
from firmware_proto.chunk_receiver import REC_HEAD, ChunkReceiver
from firmware_proto.flash_store import FlashStore
from firmware_proto.group_link import GroupLink
from firmware_proto.part_nack import parts_nack
from firmware_proto.update_state import (
    FINAL_STATUSES,
    MAX_INSTALL_ATTEMPTS,
    TRANSITIONS,
    Action,
    AgentConfig,
    AgentState,
    FetchMap,
    FetchRange,
    Job,
    Reboot,
    ReportStatus,
)
from wire.chunk_map import ChunkMap, ChunkMapError, MapHead
from wire.frames import (
    END_COMPLETE,
    NACK_DONE,
    NACK_NEED_HEAD,
    NACK_PARTS,
    NO_STREAM,
    PARTS_ALL,
    Coded,
    Data,
    End,
    FrameError,
    Head,
    Nack,
    Part,
    Poll,
    Want,
    burst_head,
    decode,
    encode,
    missing_from_nack,
    nack_covers,
    nack_parts,
    parts_covers,
    xor_blocks,
)
from wire.install_policy import InstallPolicy, PolicyError

__all__ = [
    "AWAITING_CONSENT",
    "AWAITING_WINDOW",
    "FINAL_STATUSES",
    "TRANSITIONS",
    "AgentConfig",
    "AgentState",
    "FetchMap",
    "FetchRange",
    "Reboot",
    "ReportStatus",
    "UpdateAgent",
]


class _S:
    """AgentState's members as plain class attributes (the same objects): looking one up on the
    Enum class costs ~60 ns on CPython 3.11, ~15 ns here, and :meth:`UpdateAgent.receive` and
    :meth:`UpdateAgent.next_timer` run for every frame a node hears."""

    IDLE: Final = AgentState.IDLE
    LEARNED: Final = AgentState.LEARNED
    REQUESTED: Final = AgentState.REQUESTED
    RECEIVING: Final = AgentState.RECEIVING
    VERIFYING: Final = AgentState.VERIFYING
    INSTALLING: Final = AgentState.INSTALLING
    REBOOTING: Final = AgentState.REBOOTING
    COMMITTING: Final = AgentState.COMMITTING
    ROLLING_BACK: Final = AgentState.ROLLING_BACK
    AWAITING_CONSENT: Final = AgentState.AWAITING_CONSENT
    AWAITING_INSTALL: Final = AgentState.AWAITING_INSTALL


AWAITING_WINDOW = "awaiting window"
AWAITING_CONSENT = "awaiting consent"


@dataclass(slots=True)
class _PendingNack:
    at: float
    frame: Nack
    missing: set[int] | None = None  # every missing block, only when the bitmap had to be cut
    parts: dict[int, int] | None = None  # parts: block → missing-parts mask of all I miss


class UpdateAgent:
    # one per simulated node, looked at for every frame it hears: no per-instance dict
    __slots__ = (
        "_actions",
        "_fallback",
        "_gate_at",
        "_inflight",
        "_job",
        "_last_progress",
        "_nack",
        "_next_want",
        "_receiver",
        "_resume_at",
        "_stream_id",
        "_waiting",
        "_want_frame",
        "booted",
        "chunks_verified",
        "config",
        "events",
        "flash",
        "link",
        "rng",
    )

    def __init__(
        self,
        flash: FlashStore,
        link: GroupLink,
        config: AgentConfig,
        rng: random.Random,
        booted: bootmod.Booted,
    ) -> None:
        self.flash = flash
        self.link = link
        self.config = config
        self.rng = rng
        self.booted = booted
        self.events: list[str] = []
        self.chunks_verified = 0  # chunks this agent checked against the signed map and kept
        self._actions: list[Action] = []
        self._job = Job()
        self._receiver: ChunkReceiver | None = None
        self._stream_id = NO_STREAM
        self._last_progress = 0.0
        self._next_want: float | None = None
        self._nack: _PendingNack | None = None
        self._fallback = False
        self._inflight: set[int] = set()  # chunk indexes asked for end to end
        self._resume_at: float | None = None
        self._want_frame: tuple[tuple[str, str, str, bytes], bytes] = (("", "", "", b""), b"")
        self._waiting: str | None = None  # the substate last reported while waiting
        self._gate_at: float | None = None  # when an install window opens (AWAITING_INSTALL)

    # -- persistence ------------------------------------------------------------------------
    @property
    def state(self) -> AgentState:
        return self._job.state

    @property
    def receiver(self) -> ChunkReceiver | None:
        """The receive state of the stream being downloaded (a pipelining relay forwards what it
        verified: firmware_proto.block_source.ReceiverSource); None when not receiving."""
        return self._receiver

    @property
    def running_artifact(self) -> str:
        info = bootmod.read_slot_info(self.flash, self.booted.slot)
        return info.artifact_name if info is not None else ""

    @property
    def sequence_counter(self) -> int:
        raw = self.flash.read_record("seq")
        return struct.unpack(">Q", raw)[0] if raw is not None else 0

    def _set(self, new: AgentState) -> None:
        old = self._job.state
        if new not in TRANSITIONS[old]:
            raise RuntimeError(f"illegal transition {old.name} → {new.name}")
        self._job.state = new
        if new is AgentState.IDLE:
            self.flash.delete_record("agent")
        else:
            self.flash.write_record("agent", self._job.encode())
        self.events.append(f"state {new.name}")

    def _report(self, status: str, substate: str | None = None) -> None:
        if status in FINAL_STATUSES:
            dep = self._job.deployment_id.encode()
            self.flash.write_record("report", bytes([len(status)]) + status.encode() + dep)
        self._actions.append(ReportStatus(self._job.deployment_id, status, substate))

    # -- install windows and consent ------------------------------------------------------------
    @property
    def policy(self) -> InstallPolicy:
        raw = self.flash.read_record("policy")
        if raw is None:
            return InstallPolicy()
        try:
            return InstallPolicy.decode(raw)
        except PolicyError:
            return InstallPolicy("ask-first", (), 0.0)  # a torn record never widens what is allowed

    @property
    def consented(self) -> bool:
        return self.flash.read_record("consent") == self._job.deployment_id.encode()

    def consent(self, deployment_id: str, now: float) -> None:
        """The owner said yes to this deployment (a button, the owner's app): persisted."""
        if self._job.state is _S.IDLE or deployment_id != self._job.deployment_id:
            return
        self.flash.write_record("consent", deployment_id.encode())
        self.events.append("consent given")
        self._resume_at = now

    def _needs_consent(self) -> bool:
        return self.policy.consent != "automatic" and not self.consented

    def _gate_install(self, now: float) -> None:
        """After VERIFYING: install now, or wait (visibly) for consent or a window."""
        wait = AWAITING_CONSENT if self._needs_consent() else None
        if wait is None and not self.policy.window_open(now):
            wait = AWAITING_WINDOW
        if wait is None:
            self._set(_S.INSTALLING)
            self._report("installing")
            self._install()
            return
        if self._job.state is not _S.AWAITING_INSTALL:
            self._set(_S.AWAITING_INSTALL)
        # wake when a window opens; consent (and a stale policy's refresh) arrive as inputs
        self._gate_at = self.policy.next_open(now) if wait == AWAITING_WINDOW else None
        if self._waiting != wait:
            self._waiting = wait
            self._report("pause_before_installing", wait)

    def actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    @property
    def has_actions(self) -> bool:
        """Whether :meth:`actions` would return any (a driver's check without taking them)."""
        return bool(self._actions)

    def pending_report(self) -> ReportStatus | None:
        raw = self.flash.read_record("report")
        if raw is None:
            return None
        n = raw[0]
        return ReportStatus(raw[1 + n :].decode(), raw[1 : 1 + n].decode())

    def status_delivered(self, deployment_id: str, status: str) -> None:
        if self.pending_report() == ReportStatus(deployment_id, status):
            self.flash.delete_record("report")

    # -- start / resume -----------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Resume whatever a reboot or power cut interrupted."""
        pending = self.pending_report()
        if pending is not None:
            self._actions.append(pending)
        raw = self.flash.read_record("agent")
        if raw is None:
            return
        self._job = Job.decode(raw)
        st = self._job.state
        self._last_progress = now
        if st in (_S.LEARNED, _S.REQUESTED, _S.AWAITING_CONSENT):
            self._job.state = _S.LEARNED
            if self.policy.consent == "ask-first" and not self.consented:
                self._set(_S.AWAITING_CONSENT)  # a reboot is no consent: keep waiting
                self._waiting = AWAITING_CONSENT
                return
            self._request(now)
            return
        elif st is _S.AWAITING_INSTALL:
            self._resume_at = now
        elif st is _S.RECEIVING:
            head_raw = self.flash.read_record(REC_HEAD)
            if head_raw is None:
                self._job.state = _S.REQUESTED
                self._send_want(now)
                return
            head = MapHead.decode(head_raw)
            self._receiver = ChunkReceiver(self.flash, self._job.target, head, restore=True)
            self._stream_id = head.stream_id()
            if self._receiver.complete:  # cut between the last chunk and VERIFYING
                self._resume_at = now
            else:
                self._send_want(now)
        elif st in (_S.VERIFYING, _S.INSTALLING, _S.REBOOTING, _S.COMMITTING, _S.ROLLING_BACK):
            self._resume_at = now

    def _resume_step(self, now: float) -> None:
        st = self._job.state
        target = self._job.target
        on_target = self.booted.slot == target and self.booted.trial
        if st is _S.AWAITING_CONSENT:
            if not self._needs_consent():
                self._set(_S.REQUESTED)
                self._last_progress = now
                self._send_want(now)
        elif st is _S.AWAITING_INSTALL:
            self._gate_install(now)
        elif st is _S.RECEIVING and self._receiver is not None and self._receiver.complete:
            self._verify_and_install(now)
        elif st is _S.VERIFYING:
            head_raw = self.flash.read_record(REC_HEAD)
            if head_raw is None:
                self._fail("stream state lost")
                return
            self._receiver = ChunkReceiver(self.flash, target, MapHead.decode(head_raw), restore=True)
            self._verify_and_install(now)
        elif st is _S.INSTALLING:
            self._install()
        elif st is _S.REBOOTING:
            if on_target:
                if self.config.health_check():
                    self._set(_S.COMMITTING)
                    self._commit()
                else:
                    self._set(_S.ROLLING_BACK)
                    self._actions.append(Reboot())
            elif self.booted.slot == target:  # confirmed by a cut-short commit: finish it
                self._set(_S.COMMITTING)
                self._commit()
            else:  # power failed before or during the trial boot: try again
                self._retry_install()
        elif st is _S.COMMITTING:
            if self.booted.slot == target:
                self._commit()
            else:  # cut before the confirm landed: the bootloader reverted a healthy image
                self._retry_install()
        elif st is _S.ROLLING_BACK:
            if self.booted.slot == target:
                self._actions.append(Reboot())
            else:
                self._fail("image failed its health check; rolled back")

    # -- inputs from the node's own session ---------------------------------------------------
    def deployment_learned(
        self,
        deployment_id: str,
        artifact_id: str,
        artifact_name: str,
        uri: str,
        now: float,
        policy: InstallPolicy | None = None,
    ) -> None:
        """``next`` named a deployment; ``policy``: its ``meshota.install`` (None: any time,
        automatic). The same deployment learned again only refreshes the policy."""
        if self._job.state is not _S.IDLE:
            # one deployment at a time; the server repeats next until we finish
            if deployment_id == self._job.deployment_id and policy is not None:
                self.flash.write_record("policy", policy.encode())
                if self._job.state in (_S.AWAITING_INSTALL, _S.AWAITING_CONSENT):
                    self._resume_at = now
            return
        self._job = Job(_S.IDLE, 0, 1 - self.booted.slot, deployment_id, artifact_id, artifact_name, uri)
        self.flash.delete_record("consent")
        if policy is None:
            self.flash.delete_record("policy")
        else:
            self.flash.write_record("policy", policy.encode())
        self._waiting = None
        self._set(_S.LEARNED)
        if artifact_name == self.running_artifact:
            self._report("already-installed")
            self._set(_S.IDLE)
            return
        if self.policy.consent == "ask-first" and not self.consented:
            self._set(_S.AWAITING_CONSENT)
            self._waiting = AWAITING_CONSENT
            self._report("pause_before_installing", AWAITING_CONSENT)
            return
        self._request(now)

    def _request(self, now: float) -> None:
        self._set(_S.REQUESTED)
        self._last_progress = now
        self._send_want(now)

    def _send_want(self, now: float) -> None:
        key = (self._job.artifact_id, self._job.artifact_name, self._job.uri, self._stream_id)
        if self._want_frame[0] != key:  # encoded once per (deployment, stream), sent every interval
            self._want_frame = (key, encode(Want(*key)))
        self.link.send_broadcast(self._want_frame[1])
        # back-off (Trickle-like, RFC 6206): the pause before the next WANT is as long as the node
        # has gone without stream progress, at least want_interval, at most want_max; progress,
        # a new deployment, a boot or END(complete) without me start again at want_interval
        cfg = self.config
        self._next_want = now + max(cfg.want_interval, min(now - self._last_progress, cfg.want_max))

    # -- group link ----------------------------------------------------------------------------
    def receive(self, data: bytes, sender: Hashable, now: float) -> bool:
        """One group-link frame. False: it changed nothing a driver acts on (no new action, no
        timer earlier than before; a timer that moved later may fire early, harmlessly), so a
        driver may skip :meth:`actions` and :meth:`next_timer` for it; True: call them."""
        state = self._job.state
        if state is _S.IDLE or state is _S.LEARNED:
            return False
        try:
            frame = decode(data)
        except FrameError as exc:
            self.events.append(f"frame dropped: {exc}")
            return True
        if state is not _S.REQUESTED and state is not _S.RECEIVING:
            if isinstance(frame, Poll) and frame.stream_id == self._stream_id != NO_STREAM:
                self._send_done(frame.round)  # still tell the root I hold everything
                return True
            return False
        if isinstance(frame, Part):  # the most common frame on 802.15.4: tested first
            rec = self._receiver
            if rec is None or frame.tag != self._stream_id[:2]:
                return False
            self._last_progress = now
            if frame.block in rec.bitmap and not rec.complete:
                return False  # a duplicate: progress only
            return self._on_part(frame, now)
        if isinstance(frame, Head):
            if self._receiver is not None:
                return False  # a stream is held (_on_head keeps it): nothing changed
            self._on_head(frame.head, now)
            return True
        if self._stream_id == NO_STREAM or frame.stream_id != self._stream_id:
            if isinstance(frame, Poll) and self._receiver is None:  # tell that root I need its head
                self._plan_nack(frame, sender, now)
            return True
        self._last_progress = now
        if isinstance(frame, Data):
            rec = self._receiver
            if rec is not None and frame.block in rec.bitmap and not rec.complete:
                return False  # a duplicate (the most common frame on a mesh): progress only
            self._on_block(frame.block, frame.payload, now)
        elif isinstance(frame, Coded):
            self._on_coded(frame, now)
        elif isinstance(frame, Poll):
            self._plan_nack(frame, sender, now)
        elif isinstance(frame, Nack):
            self._overheard(frame)
        elif isinstance(frame, End) and self._receiver is not None and not self._receiver.complete:
            if frame.reason == END_COMPLETE:  # its group was done without me: join its next one
                self.events.append("stream ended without me: want again")
                self._send_want(now)
            else:
                self._start_fallback(now, "root ended the stream")
        return True

    def receive_burst(
        self, frames: Sequence[bytes], sender: Hashable, now: float, head: bytes | None = None
    ) -> bool:
        """Frames heard back to back from one sender (a block's parts, SPEC.md §3.2): the same as
        :meth:`receive` for each in order; True if any of those calls would have returned True.

        Fast path for what a burst is, well-formed PART frames of one block of this node's stream
        (:func:`wire.frames.burst_head`, on the raw headers; ``head``: a driver that checked the
        burst these frames were taken from says its head): the block is looked up once (held:
        every part a duplicate, progress only, as :meth:`receive` treats them) and its parts are
        stored in one call (:meth:`ChunkReceiver.accept_parts`). Anything else goes frame by
        frame."""
        rec = self._receiver
        state = self._job.state
        if rec is None or not (state is _S.RECEIVING or state is _S.REQUESTED):
            return self._receive_each(frames, sender, now)
        if head is None:
            head = burst_head(frames)
        if head is None or head[2:4] != self._stream_id[:2]:
            return self._receive_each(frames, sender, now)
        block = int.from_bytes(head[4:8], "big")
        self._last_progress = now
        if block in rec.bitmap:  # duplicates: progress only (complete: as receive would have it)
            return False if not rec.complete else self._receive_each(frames, sender, now)
        if rec.complete:  # nothing left to take (a block out of range): each frame as receive would
            return self._receive_each(frames, sender, now)
        # what _on_part does for each part in turn, with the parts stored in one call
        before = rec.chunks_verified
        results = rec.accept_parts(block, [(f[8] >> 4, (f[8] & 15) + 1, f[9:]) for f in frames])
        self.chunks_verified += rec.chunks_verified - before
        touched = False
        for result in results:
            if result.accepted:
                touched = True  # a block verified: a pipelining relay may forward it
            elif result.reason not in ("duplicate", "part kept"):
                self.events.append(f"block {block} rejected: {result.reason}")
                touched = True
        if rec.complete:  # the last block: the parts after it were duplicates
            self._send_done(0)
            self._verify_and_install(now)
            return True
        return touched

    def _receive_each(self, frames: Sequence[bytes], sender: Hashable, now: float) -> bool:
        touched = False
        for data in frames:
            if self.receive(data, sender, now):
                touched = True
        return touched

    def _accept_head(self, head_bytes: bytes) -> MapHead | None:
        try:
            head = MapHead.decode(head_bytes)
            head.verify(self.config.map_key)
        except ChunkMapError as exc:
            self.events.append(f"head rejected: {exc}")
            return None
        if head.artifact_id != self._job.artifact_id or head.artifact_name != self._job.artifact_name:
            self.events.append("head rejected: not the artifact my deployment names")
            return None
        if head.sequence <= self.sequence_counter:
            self.events.append(f"head rejected: sequence {head.sequence} <= {self.sequence_counter}")
            return None
        if head.artifact_size > self.flash.slot_size:
            self.events.append("head rejected: artifact larger than the slot")
            return None
        return head

    def _on_head(self, head_bytes: bytes, now: float) -> None:
        if self._receiver is not None:
            return  # keep the stream whose bitmap we hold (a new root serving it reuses its id)
        head = self._accept_head(head_bytes)
        if head is None:
            return
        self._begin(head, now)

    def _begin(self, head: MapHead, now: float) -> None:
        self._receiver = ChunkReceiver.start(self.flash, self._job.target, head)
        self._stream_id = head.stream_id()
        self._last_progress = now
        self._set(_S.RECEIVING)
        self._report("downloading")

    def _on_block(self, block: int, payload: bytes, now: float) -> None:
        assert self._receiver is not None
        before = self._receiver.chunks_verified
        result = self._receiver.accept_block(block, payload)
        self.chunks_verified += self._receiver.chunks_verified - before
        if not result.accepted and result.reason != "duplicate":
            self.events.append(f"block {block} rejected: {result.reason}")
        if self._receiver.complete:
            self._send_done(0)
            self._verify_and_install(now)

    def _on_part(self, frame: Part, now: float) -> bool:
        """False: the part was kept (or held already) and nothing a driver acts on changed (no
        block verified, no action, no earlier timer); see :meth:`receive`."""
        rec = self._receiver
        assert rec is not None
        before = rec.chunks_verified
        result = rec.accept_part(frame.block, frame.index, frame.count, frame.payload)
        self.chunks_verified += rec.chunks_verified - before
        if rec.complete:
            self._send_done(0)
            self._verify_and_install(now)
            return True
        if result.accepted:
            return True  # a block verified: a pipelining relay may forward it
        if result.reason in ("duplicate", "part kept"):
            return False
        self.events.append(f"block {frame.block} rejected: {result.reason}")
        return True

    def _on_coded(self, frame: Coded, now: float) -> None:
        """Coded repair (SPEC.md §3.1): holding all blocks of it but one recovers that one, which
        is then checked like any DATA payload."""
        rec = self._receiver
        if rec is None or any(b >= rec.head.block_count for b in frame.blocks):
            return
        lacking = [b for b in frame.blocks if b not in rec.bitmap]
        if len(lacking) != 1:
            return
        others = [rec.block_payload(b) for b in frame.blocks if b != lacking[0]]
        if any(p is None for p in others):
            return  # a page whose path a power cut forgot
        data = xor_blocks([frame.payload, *[p for p in others if p is not None]])
        self._on_block(lacking[0], data[: rec.block_length(lacking[0])], now)

    def _send_done(self, round_: int) -> None:
        self.link.send_broadcast(encode(Nack(self._stream_id, round_, NACK_DONE, 0, b"")))

    def _plan_nack(self, poll: Poll, root: Hashable, now: float) -> None:
        if self._receiver is None or poll.stream_id != self._stream_id:
            frame = Nack(poll.stream_id, poll.round, NACK_NEED_HEAD, 0, b"")
            missing: set[int] | None = None
        elif self._receiver.complete:
            self._send_done(poll.round)
            return
        else:
            bitmap = self._receiver.bitmap
            base, bits = bitmap.nack(self.config.nack_max_bytes)
            frame = Nack(poll.stream_id, poll.round, 0, base, bits)
            cut = len(bits) >= self.config.nack_max_bytes and bitmap.size - bitmap.count > bin(
                int.from_bytes(bits, "big")
            ).count("1")
            missing = set(self._receiver.missing()) if cut else None
            if self._receiver.partial:
                frame, parts = parts_nack(self._receiver, frame, cut, self.config.nack_max_parts)
                missing = None
                delay = self.rng.uniform(0, poll.reply_window_ms / 1000 * 0.8)
                self._nack = _PendingNack(now + delay, frame, missing, parts)
                return
        delay = self.rng.uniform(0, poll.reply_window_ms / 1000 * 0.8)
        self._nack = _PendingNack(now + delay, frame, missing)

    def _overheard(self, other: Nack) -> None:
        """Deluge-style suppression: drop my NACK if someone already asked for all I miss."""
        mine = self._nack
        if mine is None or other.round != mine.frame.round or other.stream_id != mine.frame.stream_id:
            return
        flags = other.flags | mine.frame.flags
        if flags & NACK_PARTS and not flags & NACK_NEED_HEAD:
            if mine.parts is not None:
                wanted = mine.parts
            elif mine.missing is not None:
                wanted = dict.fromkeys(mine.missing, PARTS_ALL)
            else:
                wanted = nack_parts(mine.frame)
            if parts_covers(nack_parts(other), wanted):
                self._nack = None
                self.events.append("nack suppressed")
            return
        if other.flags & NACK_NEED_HEAD or (
            not mine.frame.flags & NACK_NEED_HEAD
            and (
                nack_covers(other, mine.frame)
                if mine.missing is None
                else mine.missing <= missing_from_nack(other)
            )
        ):
            self._nack = None
            self.events.append("nack suppressed")

    # -- fallback: fetch what the stream did not deliver over my own session --------------------
    def _start_fallback(self, now: float, why: str) -> None:
        if self._fallback:
            return
        self._fallback = True
        self.events.append(f"fallback: {why}")
        if self._receiver is None:
            self._actions.append(FetchMap(self._job.artifact_id, self.config.fallback_chunk_size))
        elif any(p not in self._receiver.bitmap for p in range(self._receiver.head.page_count)):
            self._actions.append(FetchMap(self._job.artifact_id, self._receiver.head.chunk_size))
        else:
            self._fetch_more()

    def map_fetched(self, data: bytes, now: float) -> None:
        if self._job.state not in (_S.REQUESTED, _S.RECEIVING):
            return
        try:
            cmap = ChunkMap.decode(data)
        except ChunkMapError as exc:
            self.events.append(f"fetched map rejected: {exc}")
            return
        if self._receiver is None:
            head = self._accept_head(cmap.head.encode())
            if head is None:
                return
            self._begin(head, now)
        assert self._receiver is not None
        try:
            self._receiver.accept_map(cmap)
        except ValueError as exc:
            self.events.append(f"fetched map rejected: {exc}")
            return
        self._fetch_more()

    def _fetch_more(self) -> None:
        rec = self._receiver
        if rec is None or rec.complete:
            return
        head = rec.head
        per = max(1, self.config.fallback_range_bytes // head.chunk_size)
        chunks = [b - head.page_count for b in rec.missing() if b >= head.page_count]
        chunks = [c for c in chunks if c not in self._inflight]
        while chunks and len(self._inflight) < self.config.fallback_parallel * per:
            run = [chunks.pop(0)]
            while chunks and chunks[0] == run[-1] + 1 and len(run) < per:
                run.append(chunks.pop(0))
            self._inflight.update(run)
            offset = run[0] * head.chunk_size
            end = min(head.artifact_size, (run[-1] + 1) * head.chunk_size)
            self._actions.append(FetchRange(self._job.uri, offset, end - offset))

    def range_fetched(self, offset: int, data: bytes, now: float) -> None:
        rec = self._receiver
        if rec is None or self._job.state is not _S.RECEIVING:
            return
        size = rec.head.chunk_size
        if offset % size:
            return
        for pos in range(0, len(data), size):
            chunk = (offset + pos) // size
            self._inflight.discard(chunk)
            if chunk < rec.head.chunk_count:
                self._on_block(rec.head.page_count + chunk, data[pos : pos + size], now)
                if self._job.state is not _S.RECEIVING:
                    return
        self._fetch_more()

    def fetch_failed(self, now: float) -> None:
        """The driver could not fetch: forget what is in flight, ask again at the next timeout."""
        self._inflight.clear()
        self._fallback = False
        self._last_progress = now

    # -- verify, install, reboot, commit ------------------------------------------------------
    def _verify_and_install(self, now: float) -> None:
        rec = self._receiver
        assert rec is not None
        if self._job.state is _S.RECEIVING:
            self._set(_S.VERIFYING)
        image = rec.image()
        if bootmod.image_sha256(image) != rec.head.artifact_sha256 or not self.config.image_ok(image):
            self._fail("artifact failed verification")
            return
        self._gate_install(now)

    def _install(self) -> None:
        head_raw = self.flash.read_record(REC_HEAD)
        if head_raw is None:
            self._fail("stream state lost before install")
            return
        head = MapHead.decode(head_raw)
        info = bootmod.SlotInfo(head.artifact_size, head.artifact_sha256, head.sequence, head.artifact_name)
        if bootmod.read_slot_info(self.flash, self._job.target) != info:
            bootmod.write_slot_info(self.flash, self._job.target, info)
        self._job.attempts += 1
        bootmod.write_trial(self.flash, self._job.target)
        self._set(_S.REBOOTING)
        self._report("rebooting")
        self._actions.append(Reboot())

    def _retry_install(self) -> None:
        if self._job.attempts >= MAX_INSTALL_ATTEMPTS:
            self._fail("trial boot kept failing")
            return
        self._set(_S.INSTALLING)
        self._install()

    def _commit(self) -> None:
        info = bootmod.read_slot_info(self.flash, self._job.target)
        assert info is not None
        if bootmod.read_boot(self.flash).active != self._job.target:
            bootmod.confirm(self.flash, self._job.target)
        if info.sequence > self.sequence_counter:
            self.flash.write_record("seq", struct.pack(">Q", info.sequence))
        ChunkReceiver.forget(self.flash)
        self._report("success")
        self._finish()

    def _fail(self, why: str) -> None:
        self.events.append(f"failure: {why}")
        ChunkReceiver.forget(self.flash)
        if self.booted.slot != self._job.target:
            bootmod.write_slot_info(self.flash, self._job.target, None)
        self._report("failure")
        self._finish()

    def _finish(self) -> None:
        self._receiver = None
        self._stream_id = NO_STREAM
        self._nack = None
        self._fallback = False
        self._inflight.clear()
        self._waiting = None
        self._gate_at = None
        self._job.state = _S.IDLE
        self.flash.delete_record("agent")
        self.flash.delete_record("consent")
        self.flash.delete_record("policy")
        self.events.append("state IDLE")

    # -- timers ----------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The earliest of: resume step, pending NACK, next WANT, fallback timeout (called after
        every frame by drivers: no allocation)."""
        best = self._resume_at
        gate = self._gate_at
        if gate is not None and (best is None or gate < best):
            best = gate
        if self._nack is not None and (best is None or self._nack.at < best):
            best = self._nack.at
        st = self._job.state
        if st is _S.REQUESTED or st is _S.RECEIVING:
            if st is _S.REQUESTED or (self._receiver is not None and self._stream_id != NO_STREAM):
                t = self._next_want
                if t is not None and (best is None or t < best):
                    best = t
            if not self._fallback:
                t = self._last_progress + self.config.fallback_timeout
                if best is None or t < best:
                    best = t
        return best

    def handle_timer(self, now: float) -> None:
        if self._resume_at is not None and now >= self._resume_at:
            self._resume_at = None
            self._resume_step(now)
        elif self._gate_at is not None and now >= self._gate_at:
            self._gate_at = None
            if self._job.state is _S.AWAITING_INSTALL:
                self._gate_install(now)
        if self._nack is not None and now >= self._nack.at:
            frame, self._nack = self._nack.frame, None
            self.link.send_broadcast(encode(frame))
        st = self._job.state
        if st in (_S.REQUESTED, _S.RECEIVING):
            if self._next_want is not None and now >= self._next_want:
                if now - self._last_progress >= self.config.want_interval:
                    self._send_want(now)  # nobody is streaming to me: say again what I want
                else:
                    self._next_want = now + self.config.want_interval
            if not self._fallback and now >= self._last_progress + self.config.fallback_timeout:
                self._start_fallback(now, "no progress from the group stream")
