"""The group stream on the simulated radio, run by the PRODUCT's objects (issue 7).

Per node: a :class:`SharedSlotFlash` (records + A/B slots), the bootloader model
(:func:`firmware_proto.boot.boot`), an :class:`UpdateAgent` (chunk receiver inside), and, once it
runs the new image, a :class:`GroupRelay` that streams it on to its children. Per elected root: a
:class:`GroupStreamRoot` that fetches the artifact and its signed chunk map from the server once.
This module only drives them: it delivers frames the radio carried (``receive(frame, sender, now)``
under the cell rules of :mod:`firmware_proto.group_forwarder`), calls ``handle_timer`` when
``next_timer`` is due (root cores only when their radio queue has room: link back-pressure), and
carries out their actions: statuses, fallback fetches of the map and chunk ranges over the node's
own end-to-end session (hop by hop, link-ACKed, to the root's blind relay and the server), reboots.

Faults: a malicious root taps its own frames (tamper, withhold: :mod:`mesh_sim.faults`) or
serves an older validly signed map of the same artifact (replay); a root dies and the survivors
re-elect after ``heal_delay``; a node loses power for a while and boots again from its flash.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import struct
from collections.abc import Callable, Hashable

from firmware_proto import boot as bootmod
from firmware_proto.block_source import ImageSource, ReceiverSource
from firmware_proto.group_forwarder import GroupRelay
from firmware_proto.group_stream import FetchArtifact, GroupStreamRoot, RootConfig, StreamFinished
from firmware_proto.mesh_report import MeshReporter
from firmware_proto.sealed_uplink import record_frame
from firmware_proto.testing.group import MemoryDeviceService, install_initial_image
from firmware_proto.update_agent import (
    FINAL_STATUSES,
    AgentConfig,
    AgentState,
    FetchMap,
    FetchRange,
    Reboot,
    ReportStatus,
    UpdateAgent,
)
from wire.chunk_map import ChunkMap, build_chunk_map
from wire.frames import FrameError, decode
from wire.sealed import RecordOp, derive_record_key, encode_request, seal_record

from .clock import EventClock, SimulationError
from .election import MeshTree, elect
from .faults import RootFault, root_tap
from .flash import SharedSlotFlash
from .group_delivery import GroupDelivery
from .group_node import GroupLink, SimNode
from .params import E2E_HEADER, REQUEST_BYTES, GroupParams
from .radio import Radio

__all__ = ["GroupSim", "status_frame_len"]


@functools.cache
def status_frame_len(deployment_id: str, status: str) -> int:
    """Bytes of a node's status report on the mesh: one sealed record (``0x53 0x01``, SPEC.md §5;
    a small sequence number), as the product seals it (firmware_proto/aio/group_runners.py)."""
    key = derive_record_key("sim-node", bytes(16))  # (the length does not depend on the key)
    plain = encode_request(RecordOp.STATUS, deployment_id, {"status": status})
    return len(record_frame(seal_record(key, 0, plain)))


class GroupSim(GroupDelivery):
    def __init__(
        self,
        clock: EventClock,
        radio: Radio,
        tree: MeshTree,
        service: MemoryDeviceService,
        *,
        artifact_id: str,
        deployment_id: str,
        params: GroupParams,
        map_key: object,
        image_ok: Callable[[bytes], bool],
        factory_image: bytes,
        factory_name: str,
        factory_sequence: int,
        seed: int,
        root_faults: dict[int, RootFault] | None = None,
        old_artifact: bytes | None = None,
    ) -> None:
        self.clock = clock
        self.radio = radio
        self.tree = tree
        self.service = service
        self.artifact_id = artifact_id
        self.artifact_name, self.artifact = service.artifacts[artifact_id]
        self.uri = f"mem://{artifact_id}"
        self.deployment_id = deployment_id
        self.params = params
        self.map_key = map_key
        self.image_ok = image_ok
        self.rng = random.Random(f"agents-{seed}")
        self.root_faults = root_faults or {}
        self.old_artifact = old_artifact
        self._pool: dict[bytes, bytes] = {}
        self._images: dict[bytes, bytes] = {}
        self._joins: dict[tuple[int | bytes, ...], tuple[tuple[bytes, ...], bytes]] = {}
        self._maps: dict[bytes, object] = {}
        self._configs: dict[int, AgentConfig] = {}
        self.nodes: list[SimNode] = []
        slot = max(len(self.artifact), len(factory_image)) + 4096
        for _ in range(radio.topo.n):
            flash = SharedSlotFlash(slot, self._pool, self._joins)
            install_initial_image(flash, factory_image, factory_name, factory_sequence)
            flash.write_record("seq", struct.pack(">Q", factory_sequence))  # SPEC.md §4
            self.nodes.append(SimNode(flash))
        self.factory_sequence = factory_sequence
        self.on_stream_start: Callable[[], None] | None = None
        self.root_config = RootConfig(
            collection_window=params.collection_window,
            chunk_size=params.chunk_size,
            frames_per_tick=2,
            reply_window_ms=params.reply_window_ms,
            max_rounds=params.max_rounds,
            quiet_rounds=params.quiet_rounds,
            unicast_max=params.unicast_max,
            part_room=params.part_room,
        )
        # a relay streams like a root, with its own (shorter) collection window
        self.relay_config = dataclasses.replace(self.root_config, collection_window=params.relay_window)
        self.stream_start: float | None = None
        self.root_fetches = 0
        self.uplink_bytes = 0
        self.finished: list[StreamFinished] = []
        self.reelections = 0
        self.learned: set[int] = set()
        self._open: set[int] = set(range(radio.topo.n))
        self._relay_images: dict[int, tuple[SharedSlotFlash, int, int, int, bytes]] = {}
        self.fallback_bytes = 0
        self._pending_reboots = 0
        self._pending_reelections = 0
        self.done_at: float | None = None
        # an external server side (the demo's real handlers): statuses the nodes delivered, and the
        # root's artifact download; None: the in-memory service only
        self.on_status: Callable[[int, str, str], None] | None = None
        self.fetch_artifact: Callable[[int, str], bytes] | None = None
        self._statuses_in_flight = 0  # with ``on_status``: the run ends when the server has them all
        # the demo: each streaming core's progress reports (wire/SPEC.md §7) handed to the server
        # side, nodes named by ``node_name``; None: no reports
        self.on_mesh_report: Callable[[int, bytes], None] | None = None
        self.node_name: Callable[[Hashable], str] = str
        self.mesh_report_interval = 5.0
        self._reporters: dict[int, tuple[MeshReporter, float]] = {}  # node → (reporter, next look)
        # sleep (params.sleep, _try_sleep): per node its children in the tree whose radio is on, and
        # when its radio last went to sleep (None: awake)
        self._awake_kids = [len(c) for c in tree.children]
        self.asleep_at: list[float | None] = [None] * radio.topo.n
        radio.attach(clock, self._deliver, self._idle, self._deliver_all, self._deliver_burst)

    # -- set-up -------------------------------------------------------------------------------------
    def start(self) -> None:
        for v in range(len(self.nodes)):
            self._boot(v)

    def learn(self, v: int) -> None:
        """The node's own ``next`` told it about the deployment (control plane)."""
        self.learned.add(v)
        node = self.nodes[v]
        if node.agent is not None and node.final is None:
            self.clock.trace("learn", v)
            node.agent.deployment_learned(
                self.deployment_id, self.artifact_id, self.artifact_name, self.uri, self.clock.now
            )
            self._pump(v)

    def _config(self, depth: int) -> AgentConfig:
        cfg = self._configs.get(depth)
        if cfg is None:
            p = self.params
            cfg = AgentConfig(
                map_key=self.map_key,  # type: ignore[arg-type]
                image_ok=self.image_ok,
                want_interval=p.want_interval,
                want_max=p.want_max,
                fallback_timeout=p.fallback_base + max(0, depth) * p.hop_budget,
                fallback_chunk_size=p.chunk_size,
                nack_max_bytes=p.nack_max_bytes,
            )
            self._configs[depth] = cfg
        return cfg

    def _boot(self, v: int) -> None:
        node = self.nodes[v]
        node.boots += 1
        node.down = False
        self.radio.power(v, True)
        booted = bootmod.boot(node.flash, self.image_ok)
        agent = UpdateAgent(
            node.flash,
            GroupLink(self, v),
            self._config(self.tree.depth[v]),
            random.Random(self.rng.random()),
            booted,
        )
        node.agent = agent
        agent.start(self.clock.now)
        if self.tree.parent[v] < 0 and self.tree.root_of[v] == v and node.root is None:
            node.root = self._root_core(v)
            held = GroupRelay(node.flash, GroupLink(self, v), self.relay_config)
            if held.load(booted.slot, self._maps):  # type: ignore[arg-type]
                # the image it streamed, after its own install reboot: a late asker gets it from
                # flash after the held window, not a fetch after a whole collection window
                cmap = self._maps[held.map_bytes]
                assert isinstance(cmap, ChunkMap)
                node.root.hold(ImageSource(self._relay_image(held), cmap))
        elif node.root is None:  # serves its committed image, or forwards while it downloads
            node.relay = GroupRelay(node.flash, GroupLink(self, v), self.relay_config)
            node.relay.load(booted.slot, self._maps)  # type: ignore[arg-type]
        self._pump(v)
        if v in self.learned and agent.state is AgentState.IDLE and node.final is None:
            self.learn(v)
        self._try_sleep(v)

    def _root_core(self, v: int) -> GroupStreamRoot:
        fault = self.root_faults.get(v)
        tap = None if fault is None else root_tap(fault, len(self.artifact), self.params.chunk_size)
        self.clock.trace("root", v)
        return GroupStreamRoot(GroupLink(self, v, tap), self.root_config)

    # -- timers -----------------------------------------------------------------------------------------
    def _reboot(self, v: int) -> None:
        """The agent's install reboot: keep the relay map, power off for ``reboot_s``."""
        GroupRelay.capture(self.nodes[v].flash)
        self._power_off(v, self.params.reboot_s)

    def _idle(self, v: int) -> None:
        """The radio's ``on_idle``, the last thing a ``Radio._end`` event does: :meth:`_arm`, and a
        timer due now runs at once when no other event is due now (the clock would run it next:
        the same order, one heap event fewer; back-pressured cores wake so after every frame).
        Only the cores' timers are asked: the agent's cannot have moved earlier than the node's
        wake-up since its last :meth:`_arm` (every call that changes an agent is pumped)."""
        self._arm(v, True)

    def _arm(self, v: int, tail: bool = False) -> None:
        """Wake the node at the earliest time its cores ask for. A wake-up already on the clock for
        that time is reused (a node's far timers, asked for again after every nearer wake-up,
        would otherwise pile up on the clock: ~30 per node, a third of a run's heap); one that
        turns out too early (a timer moved later) re-arms when it fires."""
        node = self.nodes[v]
        if node.down:
            return
        best = node.timer_at  # an earlier wake-up already pending re-arms when it fires (lazy timers)
        if not tail and node.agent is not None and (t := node.agent.next_timer()) is not None and t < best:
            best = t
        if (node.root is not None or node.relay is not None) and self.radio.group_queued[v] < 2:
            if node.root is not None and (t := node.root.next_timer()) is not None and t < best:
                best = t
            relay = node.relay  # (GroupRelay.next_timer is its core's: asked directly, one call less)
            if relay is not None and (t := relay.core.next_timer()) is not None and t < best:
                best = t
        if best < node.timer_at:
            node.timer_at = best
            if best in node.queued:
                return
            clock = self.clock
            if tail and best <= clock.now and not clock.stopped:
                heap = clock._heap
                if not heap or heap[0][0] > clock.now:
                    self._fire(v, node.timer_gen, best)
                    return
            node.queued.add(best)
            clock.at(best, self._fire, v, node.timer_gen, best)

    def _fire(self, v: int, gen: int, at: float) -> None:
        node = self.nodes[v]
        if gen != node.timer_gen or node.down:
            return
        node.queued.discard(at)
        if at != node.timer_at:
            return  # an earlier wake-up was asked for and ran: this one's time was not asked for again
        now = self.clock.now
        node.fires_now = node.fires_now + 1 if node.timer_at == now else 0
        if node.fires_now > 10_000:
            raise SimulationError(now, f"node {v}: a core keeps asking for a timer at t={now}")
        node.timer_at = math.inf
        room = self.radio.group_queued[v] < 2
        if node.agent is not None and (t := node.agent.next_timer()) is not None and t <= now:
            node.agent.handle_timer(now)
        if room and node.root is not None and (t := node.root.next_timer()) is not None and t <= now:
            node.root.handle_timer(now)
        if room and node.relay is not None and (t := node.relay.core.next_timer()) is not None and t <= now:
            relay = node.relay
            relay.handle_timer(now, lambda: self._relay_image(relay))
        self._pump(v)

    def _relay_image(self, relay: GroupRelay) -> bytes:
        """The relay's slot bytes, read from its flash once per (slot, size, flash writes)."""
        assert relay.head is not None
        flash = relay.flash
        assert isinstance(flash, SharedSlotFlash)
        key = (relay.slot, relay.head.artifact_size, flash.writes)
        cached = self._relay_images.get(id(flash))
        if cached is not None and cached[0] is flash and cached[1:4] == key:
            return cached[4]
        data = flash.read_slot(relay.slot, 0, relay.head.artifact_size)
        data = self._images.setdefault(data, data)
        self._relay_images[id(flash)] = (flash, *key, data)
        return data

    # -- actions ------------------------------------------------------------------------------------------
    def _mesh_report(self, v: int, core: GroupStreamRoot, ended: bool) -> None:
        """The core's due progress reports, looked at when a stream ended or ``interval`` passed."""
        now = self.clock.now
        reporter, look = self._reporters.get(v, (None, 0.0))
        if reporter is None or reporter.core is not core:
            reporter = MeshReporter(core, self.mesh_report_interval, self.node_name)
        elif not ended and now < look:
            return
        self._reporters[v] = (reporter, now + self.mesh_report_interval)
        for body in reporter.due(now):
            assert self.on_mesh_report is not None
            self.on_mesh_report(v, body)

    def _pump(self, v: int) -> None:
        node = self.nodes[v]
        if node.root is not None:
            ended = False
            for action in node.root.actions():
                if isinstance(action, FetchArtifact):
                    node.root_streaming = True
                    self._root_fetch(v, action)
                else:
                    node.root_streaming, ended = False, True
                    self.finished.append(action)
                    self.clock.trace("finished", v, action.complete, action.rounds)
                    self._try_sleep(v)
            if self.on_mesh_report is not None:
                self._mesh_report(v, node.root, ended)
            if node.reboot_deferred and not node.root_streaming:
                self.clock.trace("deferred-reboot", v)
                node.reboot_deferred = False
                self._reboot(v)
                return
        relay = node.relay
        if relay is not None and self.on_mesh_report is not None:
            self._mesh_report(v, relay.core, bool(relay.finished))
        if relay is not None and relay.finished:
            self.finished.extend(relay.finished)
            relay.finished.clear()
            self._try_sleep(v)
            if node.reboot_deferred and not relay.busy:
                self.clock.trace("deferred-reboot", v)
                node.reboot_deferred = False
                self._reboot(v)
                return
        agent = node.agent
        while agent is not None and (todo := agent.actions()):
            for step in todo:
                if isinstance(step, ReportStatus):
                    self._status(v, step)
                elif isinstance(step, FetchMap):
                    self._fallback_fetch(v, None, step.artifact_id, step.chunk_size)
                elif isinstance(step, FetchRange):
                    self._fallback_fetch(v, step, "", 0)
                elif isinstance(step, Reboot):
                    if (node.root is not None and node.root_streaming) or (relay is not None and relay.busy):
                        # a root (or a pipelining relay) that installs the update itself first ends
                        # its stream (one fetch per deployment, not one per boot; children keep
                        # their parent's rounds); the agent waits in REBOOTING
                        node.reboot_deferred = True
                        continue
                    self._reboot(v)
                    return
            agent = node.agent
        if relay is not None and relay.head is None and agent is not None:
            rec = agent.receiver  # pipelining: the relay forwards what this node verified
            followed = relay.source.receiver if isinstance(relay.source, ReceiverSource) else None
            if rec is not None and followed is not rec:
                relay.follow(ReceiverSource(rec), self.clock.now)
        self._arm(v)

    def _root_fetch(self, v: int, action: FetchArtifact) -> None:
        self.root_fetches += 1
        if self.stream_start is None:
            self.stream_start = self.clock.now
            if self.on_stream_start is not None:
                self.on_stream_start()
        self.clock.trace("fetch", v)
        fault = self.root_faults.get(v)
        if fault is not None and fault.mode == "replay" and self.old_artifact is not None:
            data = self.old_artifact  # an older map of the same artifact, validly signed long ago
            cmap = build_chunk_map(
                data,
                artifact_id=self.artifact_id,
                artifact_name=self.artifact_name,
                chunk_size=action.chunk_size,
                sequence=self.factory_sequence,  # not above what the nodes run: refused
                key=self.service.key,
            ).encode()
        else:
            data = (
                self.artifact if self.fetch_artifact is None else self.fetch_artifact(v, action.artifact_id)
            )
            cmap = self.service.chunk_map(action.artifact_id, action.chunk_size)
        self.uplink_bytes += len(data) + len(cmap)
        delay = self.params.server_latency + (len(data) + len(cmap)) / self.params.uplink_rate
        self.clock.after(delay, self._root_fetched, v, action.artifact_id, data, cmap)

    def _root_fetched(self, v: int, artifact_id: str, data: bytes, cmap: bytes) -> None:
        node = self.nodes[v]
        if node.root is not None and not node.down:
            node.root.artifact_fetched(artifact_id, data, cmap, self.clock.now)
            self._pump(v)

    def _status(self, v: int, action: ReportStatus) -> None:
        node = self.nodes[v]
        now = self.clock.now
        node.reported.append(action.status)
        if self.on_status is not None:  # (counted before _check_done: the run waits for this one too)
            self._statuses_in_flight += 1
        if action.status in FINAL_STATUSES and node.final is None:
            node.final = action.status
            if action.status == "success":
                node.success_at = now
            self.clock.trace("final", v, action.status)
            self._try_sleep(v)
            self._check_done()

        def delivered() -> None:
            self.service.statuses.setdefault(v, []).append((action.deployment_id, action.status))
            if self.on_status is not None:
                self.on_status(v, action.deployment_id, action.status)
                self._statuses_in_flight -= 1
                self._check_done()
            agent = self.nodes[v].agent
            if agent is not None:
                agent.status_delivered(action.deployment_id, action.status)

        self._uplink(v, status_frame_len(action.deployment_id, action.status), delivered)

    def _uplink(self, v: int, size: int, done: Callable[[], None]) -> None:
        """A sealed record up to the root, hop by hop, packed with others on the way (SPEC.md §5,
        §5.1; mesh_sim/routes.py); the root batches it to the server. Retried after 1 s, like the
        sender's next record, when the route is down or a hop failed."""
        path = self.tree.path_to_root(v)
        if self.tree.root_of[v] < 0 or not all(self.radio.alive[u] for u in path):
            self.clock.after(1.0, self._uplink, v, size, done)
            return

        def arrived(ok: bool) -> None:
            if ok:
                self.clock.after(self.params.server_latency, done)
            else:
                self.clock.after(1.0, self._uplink, v, size, done)

        self.radio.send_path(
            path,
            size,
            arrived,
            kind="status",
            record=size - 2,
            pace=self.params.uplink_pace,
            pace_first=bool(self.tree.children[v]),  # a relay's own record goes through its packer
        )

    def _fallback_fetch(self, v: int, rng: FetchRange | None, artifact_id: str, chunk_size: int) -> None:
        if rng is None:
            data = self.service.chunk_map(artifact_id, chunk_size)
            self.service.map_fetches[v] = self.service.map_fetches.get(v, 0) + 1
        else:
            data = self.artifact[rng.offset : rng.offset + rng.length]
            self.service.range_bytes[v] = self.service.range_bytes.get(v, 0) + len(data)
        self.fallback_bytes += len(data)

        def arrived() -> None:
            agent = self.nodes[v].agent
            if agent is None:
                return
            if rng is None:
                agent.map_fetched(data, self.clock.now)
            else:
                agent.range_fetched(rng.offset, data, self.clock.now)
            self._pump(v)

        self._e2e(v, REQUEST_BYTES, len(data), arrived, "fallback")

    # -- end-to-end transfers over the node's own session --------------------------------------------------
    def _e2e(self, v: int, up: int, down: int, done: Callable[[], None], kind: str) -> None:
        """A request up to the root (blind relay → server) and ``down`` bytes back, hop by hop."""
        path = self.tree.path_to_root(v)
        if self.tree.root_of[v] < 0 or not all(self.radio.alive[u] for u in path):
            self.clock.after(1.0, self._e2e, v, up, down, done, kind)  # no route yet: try again later
            return
        room = self.radio.profile.datagram_room() - E2E_HEADER
        parts = [E2E_HEADER + up] + [E2E_HEADER + min(room, down - i) for i in range(0, down, room)]
        state = {"left": len(parts), "failed": False}

        def part_done(ok: bool) -> None:
            state["failed"] = state["failed"] or not ok
            state["left"] -= 1
            if state["left"] == 0:
                if state["failed"]:  # the session retransmits after its timeout
                    self.clock.after(1.0, self._e2e, v, up, down, done, kind)
                else:
                    self.clock.after(self.params.server_latency, done)

        self._hop(path, parts[0], kind, part_done)
        down_path = list(reversed(path))
        for size in parts[1:]:
            self._hop(down_path, size, kind, part_done)

    def _hop(self, path: list[int], size: int, kind: str, done: Callable[[bool], None]) -> None:
        """One datagram along ``path`` hop by hop (:meth:`Radio.send_path`)."""
        self.radio.send_path(path, size, done, kind=kind)

    # -- faults ---------------------------------------------------------------------------------------------
    def _retire(self, v: int) -> None:
        node = self.nodes[v]
        if node.agent is not None:
            node.events += node.agent.events
        node.agent = None
        node.relay = None
        node.root = None
        node.root_streaming = False
        node.reboot_deferred = False
        node.timer_gen += 1
        node.timer_at = math.inf
        node.queued.clear()

    def _power_off(self, v: int, back_after: float | None) -> None:
        node = self.nodes[v]
        self._retire(v)
        node.down = True
        if self.radio.asleep[v]:  # counted awake again: its parent's count (_try_sleep) goes back up
            self.asleep_at[v] = None
            p = self.tree.parent[v]
            if p >= 0:
                self._awake_kids[p] += 1
        self.radio.power(v, False)
        self.clock.trace("down", v)
        if back_after is not None:
            self._pending_reboots += 1
            self.clock.after(back_after, self._power_on, v)

    def _power_on(self, v: int) -> None:
        self._pending_reboots -= 1
        self._boot(v)
        self._check_done()

    def node_reboots(self, v: int, duration: float) -> None:
        self._power_off(v, duration)

    def root_dies(self, v: int) -> None:
        self._power_off(v, None)
        self._pending_reelections += 1
        self.clock.after(self.params.heal_delay, self._reelect)

    def _reelect(self) -> None:
        self._pending_reelections -= 1
        self.reelections += 1
        self.tree = elect(self.radio.topo, self.radio.alive)
        self.clock.trace("reelected", tuple(self.tree.roots))
        self._resleep()
        for r in self.tree.roots:
            node = self.nodes[r]
            if node.root is None and not node.down:
                node.relay = None  # the root role fetches from the server (same cached map, same stream)
                node.root = self._root_core(r)
                self._pump(r)

    # -- sleep ------------------------------------------------------------------------------------------
    def _try_sleep(self, v: int) -> None:
        """The node's radio sleeps once nothing more is needed of it (mesh_sim/energy.py's rule,
        as the node can know it): it runs the update (success), every child in its routing tree
        sleeps, and its stream cores are idle (a relay ends its children's stream first); then
        its parent may. Asleep, no broadcast reaches it (``Radio.sleep``); unicast hops (status
        reports, fallback fetches, the control plane) still do."""
        if not self.params.sleep:
            return
        radio = self.radio
        parent = self.tree.parent
        while v >= 0:
            node = self.nodes[v]
            if (
                radio.asleep[v]
                or node.down
                or node.success_at is None
                or self._awake_kids[v]
                or node.reboot_deferred
                or (node.relay is not None and node.relay.busy)
                or (node.root is not None and node.root.busy)
            ):
                return
            radio.sleep(v, True)
            self.asleep_at[v] = self.clock.now
            v = parent[v]
            if v >= 0:
                self._awake_kids[v] -= 1

    def _resleep(self) -> None:
        """A new tree (re-election): every radio wakes, then sleeps again where the rule holds."""
        for v in range(len(self.nodes)):
            if self.radio.asleep[v]:
                self.radio.sleep(v, False)
                self.asleep_at[v] = None
        self._awake_kids = [len(c) for c in self.tree.children]
        for v in reversed(self.tree.order):  # children before parents
            self._try_sleep(v)

    # -- the end --------------------------------------------------------------------------------
    def _check_done(self) -> None:
        if self._pending_reboots or self._pending_reelections or self._statuses_in_flight:
            return
        alive = self.radio.alive
        closed: list[int] = []
        busy = False
        for v in self._open:  # nodes not known to be through (learned and final never revert)
            if v in self.learned and self.nodes[v].final is not None:
                closed.append(v)
            elif alive[v]:
                busy = True
                break
        self._open.difference_update(closed)
        if busy:
            return
        self.done_at = self.clock.now
        self.clock.stop()

    def agent_events(self, v: int) -> list[str]:
        node = self.nodes[v]
        return node.events + (node.agent.events if node.agent is not None else [])

    def count_events(self, needle: str) -> int:
        return sum(sum(needle in e for e in self.agent_events(v)) for v in range(len(self.nodes)))

    def decode_ok(self, frame: bytes) -> bool:
        try:
            decode(frame)
        except FrameError:
            return False
        return True
