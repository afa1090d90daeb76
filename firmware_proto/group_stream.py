"""The root's side of one signed image to a group (sans-I/O).

1. Nodes send WANT (artifact id, name, download link) on the group link. The first WANT for an
   artifact opens a *collection window* (``RootConfig.collection_window``); everyone who asks
   before it closes is in the group.
2. When the window closes the root asks its driver to fetch the artifact and its signed chunk map
   once (:class:`FetchArtifact` → :meth:`GroupStreamRoot.artifact_fetched`); a later group for
   the same artifact reuses them, and so does a group for the image the node runs
   (:meth:`GroupStreamRoot.hold`, e.g. a root after its own install reboot). Such a group's window
   is ``RootConfig.held_window`` at most: there is no fetch to batch askers for, and a late asker
   (one that missed a stream, or its whole subtree) need not wait a full window again.
3. Rounds: POLL (after a HEAD the first time, and when members joined since the last POLL; a
   node without the head answers NEED_HEAD and the HEAD goes again before the round's blocks)
   → nodes answer with NACK bitmaps after a random delay, suppressing theirs
   when an overheard NACK already covers it (Deluge) → the root sends the union of what is missing
   (pages first, then chunks), paced ``frame_interval`` apart → next POLL; a group of at most
   ``unicast_max`` unfinished members gets each DATA as link-ACKed unicast copies instead of one
   broadcast (``RootConfig.unicast_max``). The stream ends
   (END complete) when every member said DONE or ``quiet_rounds`` polls in a row drew no NACK (2×
   while a member whose last NACK asked for blocks has not said DONE),
   or (END gave up) after ``max_rounds``; nodes then fetch what they still miss themselves.
4. A new root that takes over builds the same stream id from the same signed map (the server
   caches maps), so the first POLL returns the nodes' real bitmaps and nothing is sent twice.
5. Pipelining (issue 21): the driver may answer ``FetchArtifact`` with a partial
   :class:`~firmware_proto.block_source.BlockSource` (:meth:`GroupStreamRoot.source_ready`), the
   blocks a relay verified so far. Each round sends what was asked for AND is held; while the
   source is incomplete, rounds do not count towards ``max_rounds`` or ``quiet_rounds``, and
   POLLs are at least ``follow_wait`` apart (two reply windows by default; the source grows in
   between; few rounds of many blocks rather than many NACK rounds of one block each) and only
   once the source holds more blocks, or the group has more members, than when it last looked.
   In between, where blocks go whole (``RootConfig.follow_push``), each block the last POLL's
   NACKs asked for is pushed as soon as the source holds it: a block flows on one hop as soon as
   it is verified, without a POLL and NACKs of its own.
6. Parts (SPEC.md §3.2, ``RootConfig.part_room``): on a link whose frames are small (802.15.4)
   each block goes as PART frames that each fit one link frame, instead of one DATA datagram the
   network layer would fragment (a broadcast datagram is lost if any fragment is). Nodes keep the
   parts they got and NACK the missing ones; repair resends only the parts some node asked for.

The root holds no key: everything it sends is checked by the nodes against the signed head.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final

from firmware_proto.block_source import BlockSource, ImageSource
from firmware_proto.group_link import GroupLink
from wire.chunk_map import HASH_LEN, ChunkMap, ChunkMapError, MapHead
from wire.frames import (
    CODED_MAX_BLOCKS,
    END_COMPLETE,
    END_GAVE_UP,
    NACK_DONE,
    NACK_NEED_HEAD,
    PARTS_ALL,
    PARTS_MAX,
    Coded,
    Data,
    End,
    FrameError,
    Head,
    Nack,
    Poll,
    Want,
    decode,
    encode,
    encode_parts,
    missing_from_nack,
    nack_parts,
    xor_blocks,
)

__all__ = [
    "FOLLOW_PUSH_WINDOWS",
    "NACK_FULL_BYTES",
    "FetchArtifact",
    "GroupStreamRoot",
    "RootConfig",
    "StreamFinished",
    "StreamProgress",
]

NACK_FULL_BYTES = 128  # a NACK bitmap this long may have been cut (SPEC.md §3.1)
# following with pushes (RootConfig.follow_push): POLLs at least this many reply windows apart
# unless follow_wait is set (chosen over seeds 1-8 of the 100-node table: docs/mesh_sim.md)
FOLLOW_PUSH_WINDOWS = 2


@dataclass(frozen=True, slots=True)
class RootConfig:
    collection_window: float = 3600.0
    # the window of a group for an artifact this core already holds (fetched before, or hold()):
    # at most this long (no fetch to batch askers for), never longer than collection_window
    held_window: float = 5.0
    chunk_size: int = 1024
    frame_interval: float = 0.0  # seconds between DATA frames (link pacing)
    frames_per_tick: int = 1
    reply_window_ms: int = 500
    max_rounds: int = 20
    quiet_rounds: int = 2
    # DATA to a small group: a link-ACKed unicast copy per member still receiving (0: always
    # broadcast). On a link whose datagrams are several frames (6LoWPAN fragments, no ACK or
    # retry for broadcast) a broadcast datagram is lost if any fragment is; per-fragment MAC
    # retries of unicast cost less than whole-datagram repair rounds while the group is small.
    unicast_max: int = 0
    # a relay forwarding while it downloads: least seconds between its POLLs (0: FOLLOW_PUSH_WINDOWS
    # reply windows with follow_push, else one)
    follow_wait: float = 0.0
    # following: push each block the last POLL asked for once held, between POLLs (None: where
    # blocks go whole, part_room 0: with parts repair waits a POLL a hop; docs/mesh_sim.md)
    follow_push: bool | None = None
    # coded repair (SPEC.md §3.1): up to this many chunks whose askers are disjoint go out as one
    # CODED frame (their XOR); 0 or 1: plain DATA only
    coded_max: int = 4
    # parts (SPEC.md §3.2): each block goes as PART frames of at most this many payload bytes (one
    # link frame each; at most 16 per block, else the block goes as DATA); 0: whole DATA frames.
    # CODED repair is not used with parts. A block's parts a round sends count as one item of
    # ``frames_per_tick`` and leave back to back (``GroupLink.send_burst`` where the link has it),
    # as the fragments of one datagram would.
    part_room: int = 0


@dataclass(frozen=True, slots=True)
class _PartItem:
    """The parts of one block a round sends (indexes ascending), sent back to back as one burst."""

    block: int
    indexes: tuple[int, ...]
    count: int


@dataclass(frozen=True, slots=True)
class FetchArtifact:
    """Driver: fetch the artifact (block-wise) and its chunk map for ``chunk_size``, once."""

    artifact_id: str
    uri: str
    chunk_size: int


@dataclass(frozen=True, slots=True)
class StreamFinished:
    artifact_id: str
    complete: bool
    rounds: int
    members: int
    done: int


class _Phase:  # a group's phase: ints, not an Enum (a member lookup on one costs ~60 ns on CPython 3.11)
    WINDOW: Final = 1
    FETCHING: Final = 2
    READY: Final = 3
    POLLING: Final = 4
    SENDING: Final = 5
    FINISHED: Final = 6


@dataclass(slots=True)
class _Group:
    artifact_id: str
    artifact_name: str
    uri: str
    window_end: float
    members: set[Hashable] = field(default_factory=set)
    done: set[Hashable] = field(default_factory=set)
    phase: int = _Phase.WINDOW
    round: int = 0
    quiet: int = 0
    deadline: float = 0.0
    need_head: bool = False
    wanted: set[int] = field(default_factory=set)
    queue: list[int | tuple[int, ...] | _PartItem] = field(default_factory=list)  # DATA, CODED, PART
    part_want: dict[int, int] = field(default_factory=dict)  # parts mode: block → missing-parts union
    asks: dict[Hashable, tuple[set[int], int]] = field(default_factory=dict)  # this round's NACKs
    follow_rounds: int = 0  # rounds polled while the source was incomplete (not counted as repair)
    polled_at: float = 0.0
    polled_with: tuple[int, int] = (-1, -1)  # (blocks the source held, members) at the last POLL
    waiting: bool = False  # following: no timer until the source or the group grew (next_timer)
    unsent: set[int] = field(default_factory=set)  # following: asked at the last POLL, not queued
    owing: set[Hashable] = field(default_factory=set)  # members whose last NACK asked for blocks
    # for progress reports (firmware_proto/mesh_report.py): what this stream put on air, and per
    # member the blocks its last NACK said it misses
    bytes_on_air: int = 0
    frames_on_air: int = 0
    missing: dict[Hashable, int] = field(default_factory=dict)
    complete: bool = False


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """One stream as the root saw it (:meth:`GroupStreamRoot.progress`). ``missing``: per member
    that NACKed, the blocks its last NACK asked for (``blocks`` after NEED_HEAD); done members, and
    every member after a poll nobody NACKed, 0."""

    artifact_id: str
    artifact_name: str
    stream_id: bytes
    blocks: int
    rounds: int
    finished: bool
    complete: bool
    bytes_on_air: int
    frames_on_air: int
    members: frozenset[Hashable]
    done: frozenset[Hashable]
    missing: dict[Hashable, int]


class GroupStreamRoot:
    def __init__(self, link: GroupLink, config: RootConfig) -> None:
        self.link = link
        self.config = config
        push = config.follow_push  # following (_poll_after): push between POLLs, and their spacing
        self._push = config.part_room == 0 if push is None else push
        windows = FOLLOW_PUSH_WINDOWS if self._push else 1
        self._follow_wait = config.follow_wait or config.reply_window_ms / 1000 * windows
        self.events: list[str] = []
        self._groups: dict[str, _Group] = {}
        self._sources: dict[str, BlockSource] = {}  # artifact id → what the stream sends from
        self._actions: list[FetchArtifact | StreamFinished] = []
        self._active: str | None = None
        self.fetches = 0
        self._sid_memo: tuple[object, bytes] = (None, b"")  # (head, its stream id): one hash per head
        self.bytes_sent = 0
        self.frames_sent = 0

    def actions(self) -> list[FetchArtifact | StreamFinished]:
        out, self._actions = self._actions, []
        return out

    def _broadcast(self, frame: bytes) -> None:
        self._count(frame)
        self.link.send_broadcast(frame)

    def _count(self, frame: bytes) -> None:
        self.bytes_sent += len(frame)
        self.frames_sent += 1
        group = self._groups.get(self._active) if self._active else None
        if group is not None:
            group.bytes_on_air += len(frame)
            group.frames_on_air += 1

    def progress(self) -> list[StreamProgress]:
        """Every stream that started (its source is here), as the root saw it so far."""
        out = []
        for g in self._groups.values():
            source = self._sources.get(g.artifact_id)
            if source is None or g.phase in (_Phase.WINDOW, _Phase.FETCHING):
                continue
            head = source.head
            out.append(
                StreamProgress(
                    g.artifact_id, g.artifact_name, head.stream_id(), head.block_count, g.round,
                    g.phase is _Phase.FINISHED, g.complete, g.bytes_on_air, g.frames_on_air,
                    frozenset(g.members), frozenset(g.done), dict(g.missing),
                )
            )  # fmt: skip
        return out

    # -- inputs ------------------------------------------------------------------------------------
    def receive(self, data: bytes, sender: Hashable, now: float) -> None:
        try:
            frame = decode(data)
        except FrameError as exc:
            self.events.append(f"frame dropped: {exc}")
            return
        if isinstance(frame, Want):
            self._on_want(frame, sender, now)
        elif isinstance(frame, Nack):
            self._on_nack(frame, sender)

    def _on_want(self, want: Want, sender: Hashable, now: float) -> None:
        group = self._groups.get(want.artifact_id)
        if group is None or group.phase is _Phase.FINISHED:
            window = self.config.collection_window
            if want.artifact_id in self._sources:  # held: no fetch to batch askers for
                window = min(window, self.config.held_window)
            group = _Group(want.artifact_id, want.artifact_name, want.source_uri, now + window)
            self._groups[want.artifact_id] = group
            self.events.append(f"window opened for {want.artifact_name}")
        group.members.add(sender)
        group.done.discard(sender)

    def _on_nack(self, nack: Nack, sender: Hashable) -> None:
        group = self._groups.get(self._active) if self._active else None
        source = self._sources.get(self._active) if self._active else None
        if group is None or source is None:
            return
        head = source.head
        if nack.stream_id != self._sid(head):
            return
        group.members.add(sender)
        if nack.flags & NACK_DONE:
            group.done.add(sender)
            group.missing[sender] = 0
            group.owing.discard(sender)
            return
        if group.phase is not _Phase.POLLING or nack.round != group.round:
            return
        group.owing.add(sender)
        if nack.flags & NACK_NEED_HEAD:
            group.need_head = True
            group.asks[sender] = (set(), 0)  # everything
            group.missing[sender] = head.block_count
            return
        if self.config.part_room > 0:
            asked = nack_parts(nack)
            count = head.block_count
            if asked and max(asked) >= count:
                asked = {b: m for b, m in asked.items() if b < count}
            missing = set(asked)
            want = group.part_want
            for block, mask in asked.items():
                want[block] = want.get(block, 0) | mask
        else:
            missing = missing_from_nack(nack)
            if missing and max(missing) >= head.block_count:
                missing = {b for b in missing if b < head.block_count}
        group.wanted |= missing
        # a bitmap of NACK_FULL_BYTES or more may have been cut: blocks past it may be missing too
        limit = nack.base + 8 * len(nack.bitmap) if len(nack.bitmap) >= NACK_FULL_BYTES else head.block_count
        old = group.asks.get(sender)
        group.asks[sender] = (missing | old[0], min(limit, old[1])) if old else (missing, limit)
        held, upto = group.asks[sender]
        below = len(held) if upto >= head.block_count else sum(1 for b in held if b < upto)
        group.missing[sender] = below + max(0, head.block_count - upto)

    def artifact_fetched(self, artifact_id: str, artifact: bytes, chunk_map: bytes, now: float) -> None:
        try:
            cmap = ChunkMap.decode(chunk_map)
        except ChunkMapError as exc:
            self.events.append(f"fetched map unusable: {exc}")
            self.fetch_failed(artifact_id, now)
            return
        if len(artifact) != cmap.head.artifact_size:
            self.events.append("fetched artifact does not match its map")
            self.fetch_failed(artifact_id, now)
            return
        self.source_ready(artifact_id, ImageSource(artifact, cmap), now)

    def source_ready(self, artifact_id: str, source: BlockSource, now: float) -> None:
        """Answer ``FetchArtifact`` with what to send from: the whole image, or (pipelining) the
        blocks a relay has verified so far, which may grow while the stream runs."""
        self._sources[artifact_id] = source
        group = self._groups.get(artifact_id)
        if group is not None and group.phase is _Phase.FETCHING:
            group.phase = _Phase.READY

    def hold(self, source: BlockSource) -> None:
        """A whole verified image this node holds (the one it runs: ``GroupRelay.load``): a group
        for its artifact streams from ``source`` without a fetch, after ``held_window``."""
        if not source.complete:
            raise ValueError("hold() takes a whole image")
        self._sources.setdefault(source.head.artifact_id, source)

    @property
    def busy(self) -> bool:
        """A group is collecting, fetching or being streamed."""
        return any(g.phase is not _Phase.FINISHED for g in self._groups.values())

    def fetch_failed(self, artifact_id: str, now: float) -> None:
        group = self._groups.get(artifact_id)
        if group is not None:
            group.phase = _Phase.FINISHED
            self._actions.append(StreamFinished(artifact_id, False, 0, len(group.members), 0))
            if self._active == artifact_id:
                self._active = None

    # -- timers ------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        if not self._groups:  # a relay nobody asked yet (called after every frame by drivers)
            return None
        best: float | None = None  # no list: this runs after every frame
        for group in self._groups.values():
            phase = group.phase
            if phase is _Phase.WINDOW:
                t = group.window_end
            elif phase is _Phase.READY and self._active is None:
                return group.window_end  # start at once
            elif phase is _Phase.POLLING or phase is _Phase.SENDING:
                if group.waiting and group.polled_with == (
                    self._sources[group.artifact_id].held,
                    len(group.members),
                ):
                    continue  # following a source that has not grown: nothing to poll for
                t = group.deadline
            else:
                continue
            if best is None or t < best:
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        for group in self._groups.values():
            if group.phase is _Phase.WINDOW and now >= group.window_end:
                if group.artifact_id in self._sources:
                    group.phase = _Phase.READY
                else:
                    group.phase = _Phase.FETCHING
                    self.fetches += 1
                    self._actions.append(FetchArtifact(group.artifact_id, group.uri, self.config.chunk_size))
        if self._active is None:
            ready = [g for g in self._groups.values() if g.phase is _Phase.READY]
            if ready:
                self._active = ready[0].artifact_id
                self._poll(ready[0], now)
        if self._active is not None:
            group = self._groups[self._active]
            if group.phase is _Phase.POLLING and now >= group.deadline:
                self._after_poll(group, now)
            elif group.phase is _Phase.SENDING and now >= group.deadline:
                self._send_some(group, now)

    # -- rounds --------------------------------------------------------------------------------------
    def _head_frame(self, head: MapHead) -> bytes:
        return encode(Head(self._sid(head), head.encode()))

    def _poll(self, group: _Group, now: float) -> None:
        head = self._sources[group.artifact_id].head
        group.phase = _Phase.POLLING
        group.need_head = False
        group.polled_at = now
        group.wanted = set()
        group.part_want = {}
        group.asks = {}
        group.unsent = set()
        first = group.polled_with[1] < len(group.members)  # the first POLL, or new members since
        group.polled_with = (self._sources[group.artifact_id].held, len(group.members))
        group.waiting = False
        if first:
            self._broadcast(self._head_frame(head))
        self._broadcast(encode(Poll(self._sid(head), group.round, self.config.reply_window_ms)))
        group.deadline = now + self.config.reply_window_ms / 1000

    def _after_poll(self, group: _Group, now: float) -> None:
        source = self._sources[group.artifact_id]
        head = source.head
        if group.need_head:
            group.wanted = set(range(head.block_count))
            group.part_want = {}  # every part of every block
        if group.members and group.done >= group.members:
            self._finish(group, True)
            return
        if not source.complete:  # pipelining: send what is asked for and held, then poll again
            group.round += 1
            group.follow_rounds += 1
            group.quiet = 0
            if group.need_head:
                self._broadcast(self._head_frame(head))
            blocks = source.held_of(group.wanted)
            group.unsent = group.wanted.difference(blocks)
            group.queue = self._plan(group, blocks)
            group.phase = _Phase.SENDING
            group.deadline = now
            self._send_some(group, now)
            return
        if not group.wanted:
            if not group.asks:  # a poll nobody NACKed: as far as the root can tell, nobody misses any
                group.missing = dict.fromkeys(group.members, 0)
            group.quiet += 1  # twice the quiet polls while a member that asked has not said DONE
            if group.quiet >= self.config.quiet_rounds * (2 if group.owing - group.done else 1):
                self._finish(group, True)
                return
            group.round += 1
            self._poll(group, now)
            return
        group.quiet = 0
        group.round += 1
        if group.round - group.follow_rounds > self.config.max_rounds:
            self._finish(group, False)
            return
        if group.need_head:  # someone missed the head: it drops every block until it has one
            self._broadcast(self._head_frame(head))
        # pages (low indexes) before the chunks they verify; a source that lost a page's path
        # (power cut) does not hold it
        group.queue = self._plan(group, source.held_of(group.wanted))
        group.phase = _Phase.SENDING
        group.deadline = now
        self._send_some(group, now)

    def _send_some(self, group: _Group, now: float) -> None:
        source = self._sources[group.artifact_id]
        sid = self._sid(source.head)
        for _ in range(self.config.frames_per_tick):
            if not group.queue:
                self._poll_after(group, source, now)
                return
            item = group.queue.pop(0)
            if isinstance(item, _PartItem):
                self._send_parts(group, sid, source, item)
                continue
            if isinstance(item, int):
                frame = encode(Data(sid, item, source.payload(item)))
            else:
                frame = encode(Coded(sid, item, xor_blocks([source.payload(b) for b in item])))
            targets = self._unicast_targets(group)
            if targets is None:
                self._broadcast(frame)
            else:
                for member in targets:
                    self._count(frame)
                    self.link.send_unicast(member, frame)
        group.deadline = now + self.config.frame_interval
        if not group.queue and self.config.frame_interval == 0:
            self._poll_after(group, source, now)

    def _send_parts(self, group: _Group, sid: bytes, source: BlockSource, item: _PartItem) -> None:
        """A block's parts, back to back: one burst on a link that takes bursts (a radio driver
        queues them as it would a datagram's fragments), else frame by frame."""
        frames = encode_parts(sid[:2], item.block, item.count, item.indexes, source.payload(item.block))
        targets = self._unicast_targets(group)
        if targets is not None:
            for member in targets:
                for frame in frames:
                    self._count(frame)
                    self.link.send_unicast(member, frame)
            return
        size = sum(map(len, frames))
        self.bytes_sent += size
        self.frames_sent += len(frames)
        active = self._groups.get(self._active) if self._active else None  # (_count, at once)
        if active is not None:
            active.bytes_on_air += size
            active.frames_on_air += len(frames)
        burst = getattr(self.link, "send_burst", None)
        if burst is not None:
            burst(frames)
        else:
            for frame in frames:
                self.link.send_broadcast(frame)

    def _sid(self, head: MapHead) -> bytes:
        """``head.stream_id()``, hashed once per head object (asked for every frame sent)."""
        memo = self._sid_memo
        if memo[0] is head:
            return memo[1]
        sid = head.stream_id()
        self._sid_memo = (head, sid)
        return sid

    def _plan_parts(self, group: _Group, blocks: list[int]) -> list[int | tuple[int, ...] | _PartItem]:
        """Parts mode: every part some NACK asked for (every part of a block asked for whole)."""
        room = self.config.part_room
        source = self._sources[group.artifact_id]
        head = source.head
        out: list[int | tuple[int, ...] | _PartItem] = []
        for b in blocks:
            length = (
                (head.page_leaf_count(b) + head.tree_depth) * HASH_LEN
                if b < head.page_count
                else head.chunk_length(b - head.page_count)
            )
            count = max(1, -(-length // room))
            if count > PARTS_MAX:
                out.append(b)
                continue
            mask = group.part_want.get(b, PARTS_ALL)
            indexes = tuple(j for j in range(count) if mask & (0x8000 >> j))
            if indexes:
                out.append(_PartItem(b, indexes, count))
        return out

    def _plan(self, group: _Group, blocks: list[int]) -> list[int | tuple[int, ...] | _PartItem]:
        """Coded repair (SPEC.md §3.1): chunks whose askers are pairwise disjoint share one CODED
        frame, so each asker holds every other chunk in it and recovers its own. A node whose
        NACK was suppressed misses only what one overheard NACK listed, so it is covered too."""
        if self.config.part_room > 0:
            return self._plan_parts(group, blocks)
        k = min(self.config.coded_max, CODED_MAX_BLOCKS)
        if k < 2 or not group.asks or self._unicast_targets(group) is not None:
            return list(blocks)
        pages = self._sources[group.artifact_id].head.page_count
        asks = list(group.asks.items())
        combos: list[tuple[list[int], set[Hashable]]] = []
        out: list[list[int]] = []
        for b in blocks:
            if b < pages:  # pages go as DATA (a node without a page's path cannot rebuild it)
                out.append([b])
                continue
            needers = {s for s, (miss, limit) in asks if b in miss or b >= limit}
            for combo, who in combos[-16:]:
                if len(combo) < k and who.isdisjoint(needers):
                    combo.append(b)
                    who |= needers
                    break
            else:
                combo = [b]
                combos.append((combo, needers))
                out.append(combo)
        return [c[0] if len(c) == 1 else tuple(c) for c in out]

    def _poll_after(self, group: _Group, source: BlockSource, now: float) -> None:
        """The next POLL, at once; while the source still grows, not before ``follow_wait`` after
        the last and only once it holds more blocks (or has more members) than when it last looked;
        until then (``follow_push``) what the last POLL asked for goes out as the source gets it."""
        if not source.complete:
            wait = self._follow_wait
            if (
                self._push
                and group.polled_with[1] == len(group.members)
                and (now < group.polled_at + wait or group.polled_with[0] == source.held)
            ):
                # push what the last POLL's NACKs asked for as the source gets it; what was lost
                # meanwhile is asked for again at the next POLL (new members: POLL after the wait)
                fresh = source.held_of(group.unsent)
                group.polled_with = (source.held, group.polled_with[1])
                group.deadline = now
                if fresh:
                    group.unsent.difference_update(fresh)
                    group.queue = self._plan(group, fresh)
                    group.waiting = False
                else:
                    group.queue = []
                    group.waiting = True  # next_timer: none until the source or the group grows
                return
            if now < group.polled_at + wait:
                group.queue = []
                group.deadline = group.polled_at + wait
                return
            if group.polled_with == (source.held, len(group.members)):
                group.queue = []
                group.deadline = now
                group.waiting = True  # next_timer: none until the source or the group grows
                return
        self._poll(group, now)

    def _unicast_targets(self, group: _Group) -> list[Hashable] | None:
        """Members still receiving, if few enough for unicast copies; None: broadcast."""
        limit = self.config.unicast_max
        if limit <= 0:
            return None
        targets = [m for m in group.members if m not in group.done]
        if not targets or len(targets) > limit:
            return None
        return sorted(targets, key=repr)

    def _finish(self, group: _Group, complete: bool) -> None:
        head = self._sources[group.artifact_id].head
        self._broadcast(encode(End(self._sid(head), END_COMPLETE if complete else END_GAVE_UP)))
        group.phase = _Phase.FINISHED
        group.complete = complete
        self._active = None
        self.events.append(f"stream {group.artifact_name} finished complete={complete} rounds={group.round}")
        self._actions.append(
            StreamFinished(group.artifact_id, complete, group.round, len(group.members), len(group.done))
        )
