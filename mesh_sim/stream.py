"""The group stream on the simulated radio: one signed image from each root to its whole sub-mesh.

Frames: the signed chunk map first (cut into parts), then the chunks, each one broadcast frame with
no link ACK. Every forwarder (root, or node with children) rebroadcasts each new part/chunk once
per pass; any neighbour may take a frame (opportunistic). After a pass the root asks for status;
each node reports the union of what its subtree misses to its parent (link-ACKed unicast, nothing
sent when nothing is missing: NACK suppression), and the next pass is local repair: every
forwarder resends what its children's subtrees miss and it holds. Rounds stop when all are
complete; after ``stall_rounds`` passes without progress (withholding or tampering root) or
``max_rounds`` passes, every incomplete node falls back to fetching what it misses over its own
end-to-end session (link-ACKed unicast hop by hop, through the root's blind relay).

A node checks every chunk against the map; parts/chunks that arrive before the whole map are kept
unverified in flash and checked when the map is complete and its signature and sequence number
pass. A node installs only a complete, checked image.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .chunks import ChunkMap, NodeImage
from .clock import EventClock
from .election import MeshTree, elect
from .radio import Radio

__all__ = ["GroupStream", "RootBehaviour", "StreamConfig"]

MQTTSN_PUBLISH_HEADER = 9  # length(3) type flags topic-id msg-id: worst case for a chunk PUBLISH
CHUNK_HEADER = 4  # stream id (1), flags (1)... index (2): see docs/mesh_sim.md
DTLS12_RECORD = 29
STATUS_HEADER = 11
STATUS_REQUEST_BYTES = 16


@dataclass
class RootBehaviour:
    """What a (malicious) root does to the stream: see scenario faults."""

    tamper_fraction: float = 0.0  # flip a byte in this share of chunks (and the map when 1.0)
    tamper_map: bool = False
    withhold_from: float = 1.0  # never send chunks at or beyond this share of the image
    replay: ChunkMap | None = None  # stream this older (validly signed) map and its chunks instead
    replay_chunks: list[bytes] | None = None


@dataclass
class StreamConfig:
    max_rounds: int = 20
    stall_rounds: int = 2
    heal_delay: float = 5.0  # ESP-WIFI-MESH heals in < 10 s after root loss
    window: int = 4  # chunks in flight in a fallback fetch
    uplink_rate: float = 1_000_000.0  # bytes/s a root fetches from the server


@dataclass
class _Session:
    root: int
    members: list[int]
    behaviour: RootBehaviour
    active: set[int] = field(default_factory=set)
    rounds: int = 0
    stalls: int = 0
    last_have: int = -1
    need_down: dict[int, set[int]] = field(default_factory=dict)
    done: bool = False
    dead: bool = False
    flood: bool = False  # first pass of a fresh session: every forwarder forwards everything


class GroupStream:
    def __init__(
        self,
        clock: EventClock,
        radio: Radio,
        tree: MeshTree,
        chunk_map: ChunkMap,
        chunks: list[bytes],
        public_key: Ed25519PublicKey,
        config: StreamConfig,
        *,
        min_seq: int,
        on_install: Callable[[int, float], None] | None = None,
    ) -> None:
        self.clock = clock
        self.radio = radio
        self.tree = tree
        self.map = chunk_map
        self.chunks = chunks
        self.pub = public_key
        self.cfg = config
        self.on_install = on_install
        room = radio.profile.payload_room() - MQTTSN_PUBLISH_HEADER - CHUNK_HEADER
        self.part_size = room
        self.n_parts = math.ceil(chunk_map.encoded_size() / room)
        self.total = self.n_parts + chunk_map.chunk_count
        self.frame_overhead = (
            radio.profile.mac_header + radio.profile.net_header + MQTTSN_PUBLISH_HEADER + CHUNK_HEADER
        )
        n = radio.topo.n
        self.images = [NodeImage(min_seq) for _ in range(n)]
        self.got = [bytearray(self.total) for _ in range(n)]  # 0 missing, 1 checked, 2 kept unchecked
        self.pending: list[dict[int, object]] = [{} for _ in range(n)]
        self.queue: list[deque[int]] = [deque() for _ in range(n)]
        self.queued: list[set[int]] = [set() for _ in range(n)]
        self.sending = [False] * n
        self.session_of: list[_Session | None] = [None] * n
        self.sessions: list[_Session] = []
        self.map_ok: dict[int, bool] = {}
        self.fallback_nodes: set[int] = set()
        self.fallback_frames = 0
        self.uplink_bytes = 0
        self.reelections = 0
        self.installed_at: list[float | None] = [None] * n
        self.stream_frames = 0
        self.repair_frames = 0
        self.status_frames = 0
        self._fallback_pending = 0
        self._rebooting: set[int] = set()
        self._reelections_pending = 0
        self.finished_at: float | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def start(self, behaviours: dict[int, RootBehaviour] | None = None) -> None:
        """Roots hold the image (fetched once); start one session per root."""
        for root in self.tree.roots:
            self._start_session(root, (behaviours or {}).get(root, RootBehaviour()), resume=False)

    def _start_session(self, root: int, behaviour: RootBehaviour, *, resume: bool) -> None:
        members = self.tree.subtree(root)
        s = _Session(root, members, behaviour)
        self.sessions.append(s)
        for v in members:
            self.session_of[v] = s
        # the root fetches what it lacks from the server over its own uplink (not the mesh)
        missing = self.total - sum(1 for b in self.got[root] if b == 1)
        self.uplink_bytes += missing * self.part_size
        delay = missing * self.part_size / self.cfg.uplink_rate
        self._fill(root)
        self.clock.trace("session", root, resume)
        if resume:
            self.clock.after(delay, self._status_round, s)
        else:
            s.need_down = {root: set(range(self.total))}
            s.flood = True
            self.clock.after(delay, self._begin_pass, s, list(range(self.total)))

    def _fill(self, node: int) -> None:
        """Give ``node`` the genuine map and every chunk (a root fetched them from the server)."""
        img = self.images[node]
        img.offer_map(self.map, self.pub, verified=self._map_verified(self.map))
        for i, data in enumerate(self.chunks):
            img.receive(i, data)
        self.got[node] = bytearray(b"\x01") * self.total
        self.pending[node].clear()
        self._check_install(node)

    # -- passes -----------------------------------------------------------------------------------
    def _begin_pass(self, s: _Session, root_items: list[int]) -> None:
        if s.dead:
            return
        s.rounds += 1
        self.clock.trace("pass", s.root, s.rounds, len(root_items))
        for f, items in s.need_down.items():
            if f == s.root:
                for i in root_items:
                    self._enqueue(f, i, s)
            else:
                for i in sorted(items):
                    if self.got[f][i]:
                        self._enqueue(f, i, s)
        if not s.active:
            self._end_of_pass(s)

    def _enqueue(self, node: int, item: int, s: _Session) -> None:
        if item in self.queued[node] or not self.radio.alive[node]:
            return
        self.queued[node].add(item)
        self.queue[node].append(item)
        if not self.sending[node]:
            self.sending[node] = True
            s.active.add(node)
            self._tx(node)

    def _payload(self, node: int, item: int) -> object | None:
        """What ``node`` sends for ``item`` (None: withheld); a malicious root may alter it."""
        s = self.session_of[node]
        b = s.behaviour if s is not None and s.root == node else None
        if item < self.n_parts:
            if b is not None and b.replay is not None:
                return (b.replay, item)
            if b is not None and b.tamper_map:
                return ("tampered", item)
            return (self.map, item) if self.got[node][item] == 1 else self.pending[node].get(item)
        ci = item - self.n_parts
        if b is not None:
            if b.replay is not None and b.replay_chunks is not None:
                return b.replay_chunks[ci] if ci < len(b.replay_chunks) else None
            if ci >= b.withhold_from * len(self.chunks):
                return None
            if b.tamper_fraction and (ci * 7919 % 1000) < b.tamper_fraction * 1000:
                data = self.chunks[ci]
                return bytes([data[0] ^ 0xFF]) + data[1:]
        if self.got[node][item] == 2:
            return self.pending[node][item]
        return self.chunks[ci]

    def _tx(self, node: int) -> None:
        q = self.queue[node]
        radio = self.radio
        while q:
            item = q.popleft()
            if not radio.alive[node]:
                break
            payload = self._payload(node, item)
            if payload is None:
                continue
            size = self.part_size if item < self.n_parts else len(self.chunks[item - self.n_parts])
            end, receivers = radio.broadcast(node, self.frame_overhead + size, self.clock.now)
            s = self.session_of[node]
            if s is not None and s.rounds > 1:
                self.repair_frames += 1
            else:
                self.stream_frames += 1
            self.clock.at(end, self._deliver, node, item, payload, receivers)
            return
        q.clear()
        self.queued[node].clear()
        self.sending[node] = False
        for s in self.sessions:
            if node in s.active:
                s.active.discard(node)
                if not s.active and not s.dead:
                    self._end_of_pass(s)

    def _deliver(self, sender: int, item: int, payload: object, receivers: list[int]) -> None:
        for r in receivers:
            self._on_frame(r, item, payload)
        self._tx(sender)

    def _on_frame(self, node: int, item: int, payload: object) -> None:
        got = self.got[node]
        if got[item]:
            return
        img = self.images[node]
        if item < self.n_parts:
            got[item] = 2
            self.pending[node][item] = payload
            if all(got[i] for i in range(self.n_parts)):
                self._assemble_map(node)
        elif img.chunk_map is not None:
            if not img.receive(item - self.n_parts, payload):  # type: ignore[arg-type]
                return
            got[item] = 1
            self._check_install(node)
        else:
            got[item] = 2
            self.pending[node][item] = payload
        if got[item]:
            self._maybe_forward(node, item)

    def _maybe_forward(self, node: int, item: int) -> None:
        s = self.session_of[node]
        if s is None or s.dead or not self.tree.children[node]:
            return
        if s.flood:
            self._enqueue(node, item, s)
            return
        need = s.need_down.get(node)
        if need is not None and item in need:
            self._enqueue(node, item, s)

    def _map_verified(self, cm: ChunkMap) -> bool:
        ok = self.map_ok.get(id(cm))
        if ok is None:
            ok = self.map_ok[id(cm)] = cm.verify(self.pub)
        return ok

    def _assemble_map(self, node: int) -> None:
        parts = [self.pending[node].pop(i) for i in range(self.n_parts)]
        got = self.got[node]
        first = parts[0]
        cm = first[0] if isinstance(first, tuple) and isinstance(first[0], ChunkMap) else None
        whole = cm is not None and all(isinstance(p, tuple) and p[0] is cm for p in parts)
        img = self.images[node]
        if (
            cm is None
            or not whole
            or not self._map_verified(cm)
            or not img.offer_map(cm, self.pub, verified=True)
        ):
            if cm is None or not whole or not self._map_verified(cm):
                img.rejected_maps += 1
            for i in range(self.n_parts):
                got[i] = 0
            self.clock.trace("map-rejected", node)
            return
        for i in range(self.n_parts):
            got[i] = 1
        for item, data in sorted(self.pending[node].items()):
            got[item] = 1 if img.receive(item - self.n_parts, data) else 0  # type: ignore[arg-type]
        self.pending[node].clear()
        self._check_install(node)

    def _check_install(self, node: int) -> None:
        img = self.images[node]
        if self.installed_at[node] is None and img.complete and img.chunk_map is self.map:
            self.installed_at[node] = img.installed_at = self.clock.now
            self.clock.trace("installed", node)
            if self.on_install is not None:
                self.on_install(node, self.clock.now)

    # -- status and repair -------------------------------------------------------------------------
    def _end_of_pass(self, s: _Session) -> None:
        self.clock.after(0.0, self._status_round, s)

    def _status_round(self, s: _Session) -> None:
        if s.dead or s.active:
            return
        s.flood = False
        members = [v for v in self.tree.subtree(s.root)]
        have = sum(self.images[v].have for v in members)
        if all(self.installed_at[v] is not None for v in members if self.radio.alive[v]):
            s.done = True
            self.clock.trace("session-done", s.root)
            self._maybe_finished()
            return
        s.stalls = s.stalls + 1 if have <= s.last_have else 0
        s.last_have = have
        if s.stalls >= self.cfg.stall_rounds or s.rounds >= self.cfg.max_rounds:
            self._fallback(s, members)
            return
        radio = self.radio
        now = self.clock.now
        # status request flooded down: one broadcast per forwarder
        for f in members:
            if self.tree.children[f] and radio.alive[f]:
                radio.broadcast(
                    f, radio.profile.mac_header + radio.profile.net_header + STATUS_REQUEST_BYTES, now
                )
                self.status_frames += 1
        # every incomplete node reports only what it misses itself, to its parent (one hop): the
        # parent repairs what it holds; what it lacks it misses too, so its own parent sends it
        own_missing: dict[int, set[int]] = {}
        bitmap_bytes = (self.total + 7) // 8
        room = radio.profile.payload_room()
        t_end = now
        for v in members:
            if not radio.alive[v] or v == s.root:
                continue
            miss = {i for i, b in enumerate(self.got[v]) if not b}
            if not miss:
                continue
            size = STATUS_HEADER + min(bitmap_bytes, 2 * len(miss))
            t, ok = now, True
            for _ in range(math.ceil(size / room)):
                frame = min(size, room) + radio.profile.mac_header + radio.profile.net_header
                t, ok1 = radio.unicast(v, self.tree.parent[v], frame, t)
                self.status_frames += 1
                ok = ok and ok1
            t_end = max(t_end, t)
            if ok:
                own_missing[v] = miss
        s.need_down = {}
        for v, miss in own_missing.items():
            s.need_down.setdefault(self.tree.parent[v], set()).update(miss)
        root_items = sorted(i for i in s.need_down.get(s.root, set()))
        self.clock.at(t_end, self._begin_pass, s, root_items)

    # -- fallback over each node's own end-to-end session -------------------------------------------
    def _fallback(self, s: _Session, members: list[int]) -> None:
        radio = self.radio
        p = radio.profile
        t0 = self.clock.now
        self.clock.trace("fallback", s.root, s.rounds)
        for v in members:
            if self.installed_at[v] is not None or not radio.alive[v]:
                continue
            self.fallback_nodes.add(v)
            path = self.tree.path_to_root(v)
            img = self.images[v]
            if img.chunk_map is not self.map:
                img.min_seq = max(img.min_seq, self.map.seq)
                img.chunk_map = None
                img.offer_map(self.map, self.pub, verified=self._map_verified(self.map))
                self.got[v] = bytearray(self.total)
            items = [i for i, b in enumerate(self.got[v]) if b != 1]
            t = t0
            down = list(reversed(path))
            batch_end = t
            for k, item in enumerate(items):
                size = self.part_size if item < self.n_parts else len(self.chunks[item - self.n_parts])
                if k % self.cfg.window == 0:
                    t = batch_end
                    t, _ = radio.unicast_path(path, p.mac_header + p.net_header + DTLS12_RECORD + 16, t)
                    self.fallback_frames += len(path) - 1
                end, ok = radio.unicast_path(down, self.frame_overhead + DTLS12_RECORD + size, t)
                self.fallback_frames += len(path) - 1
                batch_end = max(batch_end, end)
                if ok:
                    if item >= self.n_parts:
                        img.receive(item - self.n_parts, self.chunks[item - self.n_parts])
                    self.got[v][item] = 1
            self._fallback_pending += 1
            self.clock.at(batch_end, self._fallback_done, v)
        s.done = True
        self._maybe_finished()

    def _fallback_done(self, v: int) -> None:
        self._fallback_pending -= 1
        self._check_install(v)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        """Stop the clock once every live session is done (the control plane would tick forever)."""
        if self._fallback_pending or any(not s.done and not s.dead for s in self.sessions):
            return
        if self._rebooting or self._reelections_pending:
            return  # a rebooting node comes back and needs its session; a new root takes over
        self.finished_at = self.clock.now
        self.clock.stop()

    # -- faults -------------------------------------------------------------------------------------
    def node_down(self, node: int, *, comes_back: bool = False) -> None:
        if comes_back:
            self._rebooting.add(node)
        self.radio.alive[node] = False
        self.queue[node].clear()
        self.queued[node].clear()
        self.clock.trace("down", node)
        s = self.session_of[node]
        if s is not None and s.root == node:
            s.dead = True
            self._reelections_pending += 1
            self.clock.after(self.cfg.heal_delay, self._reelect, s)

    def node_up(self, node: int) -> None:
        self.radio.alive[node] = True
        self._rebooting.discard(node)
        self.clock.trace("up", node)
        s = self.session_of[node]
        if s is not None and s.done and not s.dead and self.installed_at[node] is None:
            s.done = False
            s.stalls = 0
            self.clock.after(0.0, self._status_round, s)
        self._maybe_finished()

    def _reelect(self, old: _Session) -> None:
        self.reelections += 1
        self._reelections_pending -= 1
        new_tree = elect(self.radio.topo, self.radio.alive)
        self.tree = new_tree
        self.clock.trace("reelected", tuple(new_tree.roots))
        for root in new_tree.roots:
            s = self.session_of[root]
            if s is old or s is None:
                self._start_session(root, RootBehaviour(), resume=True)
