"""Test helpers: a root, N update agents and an in-memory device service on virtual time.

``GroupHarness`` runs the product's own cores (:class:`GroupStreamRoot`, :class:`UpdateAgent`)
over a :class:`MemoryMedium`, and plays the parts around them: each node's end-to-end session
(:class:`MemoryDeviceService`: deployment statuses, range and map fetches, counted), the root's
fetcher, reboots through the bootloader model, and power cuts (:class:`PowerCut` raised by a
node's flash → that node reboots and resumes). Seeded: the same seed gives the same run.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware_proto import boot as bootmod
from firmware_proto.flash_store import FlashStore
from firmware_proto.group_stream import FetchArtifact, GroupStreamRoot, RootConfig
from firmware_proto.testing.flash import MemoryFlash, PowerCut, PowerCutFlash
from firmware_proto.testing.medium import MemberLink, MemoryMedium
from firmware_proto.update_agent import (
    FINAL_STATUSES,
    AgentConfig,
    FetchMap,
    FetchRange,
    Reboot,
    ReportStatus,
    UpdateAgent,
)
from wire.chunk_map import build_chunk_map
from wire.install_policy import InstallPolicy

__all__ = ["GroupHarness", "MemoryDeviceService", "NodeRig", "install_initial_image"]


class MemoryDeviceService:
    """The server as nodes and roots reach it end to end: artifacts, signed maps, statuses."""

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self.key = key
        self.artifacts: dict[str, tuple[str, bytes]] = {}  # id → (name, bytes)
        self.maps: dict[tuple[str, int], bytes] = {}
        self.sequence = 0
        self.statuses: dict[Hashable, list[tuple[str, str]]] = {}
        # every status with its time and substate: (now, node, status, substate)
        self.timeline: list[tuple[float, Hashable, str, str | None]] = []
        self.range_bytes: dict[Hashable, int] = {}  # fallback bytes served per node
        self.map_fetches: dict[Hashable, int] = {}
        self.root_fetches = 0

    def add_artifact(self, artifact_id: str, name: str, data: bytes) -> None:
        self.artifacts[artifact_id] = (name, data)

    def chunk_map(self, artifact_id: str, chunk_size: int) -> bytes:
        if (artifact_id, chunk_size) not in self.maps:
            self.sequence += 1
            name, data = self.artifacts[artifact_id]
            cmap = build_chunk_map(
                data,
                artifact_id=artifact_id,
                artifact_name=name,
                chunk_size=chunk_size,
                sequence=self.sequence,
                key=self.key,
            )
            self.maps[(artifact_id, chunk_size)] = cmap.encode()
        return self.maps[(artifact_id, chunk_size)]

    def final_status(self, node: Hashable, deployment_id: str) -> str | None:
        finals = [s for d, s in self.statuses.get(node, []) if d == deployment_id and s in FINAL_STATUSES]
        return finals[-1] if finals else None


def install_initial_image(flash: FlashStore, image: bytes, name: str, sequence: int = 0) -> None:
    """Factory state: ``image`` confirmed in slot 0."""
    flash.write_slot(0, 0, image)
    bootmod.write_slot_info(
        flash, 0, bootmod.SlotInfo(len(image), hashlib.sha256(image).digest(), sequence, name)
    )
    bootmod.confirm(flash, 0)


@dataclass(slots=True)
class NodeRig:
    name: Hashable
    flash: PowerCutFlash
    agent: UpdateAgent | None = None
    boots: int = 0
    dead_until: float | None = None
    cuts: int = 0
    slot_history: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # of every agent instance this node ran
    deployment: tuple[str, str, str] | None = None  # what its own ``next`` says: (id, artifact id, uri)
    policy: InstallPolicy | None = None  # and its ``meshota.install`` field


class GroupHarness:
    def __init__(
        self,
        *,
        seed: int,
        service: MemoryDeviceService,
        agent_config: AgentConfig,
        root_config: RootConfig,
        loss: float = 0.0,
        image_ok: Callable[[bytes], bool] = lambda _: True,
        fetch_latency: float = 0.05,
    ) -> None:
        self.rng = random.Random(seed)
        self.service = service
        self.agent_config = agent_config
        self.root_config = root_config
        self.medium = MemoryMedium(random.Random(seed + 1), loss)
        self.image_ok = image_ok
        self.fetch_latency = fetch_latency
        self.now = 0.0
        self.nodes: dict[Hashable, NodeRig] = {}
        self.roots: dict[Hashable, GroupStreamRoot] = {}
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    # -- set-up ----------------------------------------------------------------------------------
    def add_root(self, name: Hashable, config: RootConfig | None = None) -> GroupStreamRoot:
        root = GroupStreamRoot(self.medium.join(name), config or self.root_config)
        self.roots[name] = root
        return root

    def remove_root(self, name: Hashable) -> None:
        del self.roots[name]
        self.medium.leave(name)

    def add_node(self, name: Hashable, flash: FlashStore | None = None) -> NodeRig:
        rig = NodeRig(name, PowerCutFlash(flash or MemoryFlash(64 * 1024)))
        self.nodes[name] = rig
        self.medium.join(name)
        self._boot(rig)
        return rig

    def _boot(self, rig: NodeRig) -> None:
        rig.boots += 1
        self._retire(rig)
        try:
            booted = bootmod.boot(rig.flash, self.image_ok)
            rig.slot_history.append(booted.slot)
            agent = UpdateAgent(
                rig.flash, self._link(rig.name), self.agent_config, random.Random(self.rng.random()), booted
            )
            rig.agent = agent
            agent.start(self.now)
            self._drain(rig)
            if rig.deployment is not None and agent.state.name == "IDLE":
                self._learn_again(rig)
        except PowerCut:
            self._power_cut(rig)

    def _retire(self, rig: NodeRig) -> None:
        if rig.agent is not None:
            rig.events += rig.agent.events
        rig.agent = None

    def _learn_again(self, rig: NodeRig) -> None:
        """What the node's periodic ``next`` does: the server repeats an unfinished deployment."""
        assert rig.deployment is not None
        deployment_id, artifact_id, _uri = rig.deployment
        if self.service.final_status(rig.name, deployment_id) is None:
            self.learn(rig.name, deployment_id, artifact_id, _uri, rig.policy)

    def _link(self, name: Hashable) -> MemberLink:
        return MemberLink(self.medium, name)

    def _power_cut(self, rig: NodeRig) -> None:
        rig.cuts += 1
        self._retire(rig)
        rig.dead_until = self.now + 0.5

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        self._pending.append((self.now + delay, self._seq, fn))

    def learn(
        self,
        name: Hashable,
        deployment_id: str,
        artifact_id: str,
        uri: str = "mem://",
        policy: InstallPolicy | None = None,
    ) -> None:
        rig = self.nodes[name]
        rig.deployment = (deployment_id, artifact_id, uri)
        rig.policy = policy
        artifact_name = self.service.artifacts[artifact_id][0]
        self._call(
            rig,
            lambda a: a.deployment_learned(deployment_id, artifact_id, artifact_name, uri, self.now, policy),
        )

    def consent(self, name: Hashable, deployment_id: str) -> None:
        """The node's owner says yes (a button on the device, the owner's app)."""
        self._call(self.nodes[name], lambda a: a.consent(deployment_id, self.now))

    # -- running ------------------------------------------------------------------------------------
    def _call(self, rig: NodeRig, fn: Callable[[UpdateAgent], None]) -> None:
        if rig.agent is None:
            return
        try:
            fn(rig.agent)
            self._drain(rig)
        except PowerCut:
            self._power_cut(rig)

    def _drain(self, rig: NodeRig) -> None:
        agent = rig.agent
        while agent is not None and (actions := agent.actions()):
            for action in actions:
                if isinstance(action, ReportStatus):
                    self.service.statuses.setdefault(rig.name, []).append(
                        (action.deployment_id, action.status)
                    )
                    self.service.timeline.append((self.now, rig.name, action.status, action.substate))
                    agent.status_delivered(action.deployment_id, action.status)
                elif isinstance(action, FetchMap):
                    data = self.service.chunk_map(action.artifact_id, action.chunk_size)
                    self.service.map_fetches[rig.name] = self.service.map_fetches.get(rig.name, 0) + 1
                    self._later(self.fetch_latency, functools.partial(self._map_arrives, rig, data))
                elif isinstance(action, FetchRange):
                    blob = self._artifact_by_uri(action.uri)
                    data = blob[action.offset : action.offset + action.length]
                    self.service.range_bytes[rig.name] = self.service.range_bytes.get(rig.name, 0) + len(data)
                    self._later(
                        self.fetch_latency, functools.partial(self._range_arrives, rig, action.offset, data)
                    )
                elif isinstance(action, Reboot):
                    self._boot(rig)
                    return

    def _artifact_by_uri(self, uri: str) -> bytes:
        artifact_id = uri.rsplit("/", 1)[-1]
        return self.service.artifacts[artifact_id][1]

    def _root_actions(self, root: GroupStreamRoot) -> None:
        for action in root.actions():
            if isinstance(action, FetchArtifact):
                self.service.root_fetches += 1
                data = self.service.artifacts[action.artifact_id][1]
                cmap = self.service.chunk_map(action.artifact_id, action.chunk_size)
                self._later(
                    self.fetch_latency,
                    functools.partial(self._artifact_arrives, root, action.artifact_id, data, cmap),
                )

    def _artifact_arrives(self, root: GroupStreamRoot, artifact_id: str, data: bytes, cmap: bytes) -> None:
        root.artifact_fetched(artifact_id, data, cmap, self.now)

    def _map_arrives(self, rig: NodeRig, data: bytes) -> None:
        self._call(rig, lambda a: a.map_fetched(data, self.now))

    def _range_arrives(self, rig: NodeRig, offset: int, data: bytes) -> None:
        self._call(rig, lambda a: a.range_fetched(offset, data, self.now))

    def step(self) -> bool:
        times: list[float] = []
        if (t := self.medium.next_delivery()) is not None:
            times.append(t)
        times += [p[0] for p in self._pending]
        for root in self.roots.values():
            if (t := root.next_timer()) is not None:
                times.append(t)
        for rig in self.nodes.values():
            if rig.dead_until is not None:
                times.append(rig.dead_until)
            elif rig.agent is not None and (t := rig.agent.next_timer()) is not None:
                times.append(t)
        if not times:
            return False
        self.now = max(self.now, min(times))
        self.medium.now = self.now
        for when, seq, fn in sorted(p for p in self._pending if p[0] <= self.now):
            self._pending.remove((when, seq, fn))
            fn()
        for sender, target, frame in self.medium.deliveries_due(self.now):
            if target in self.roots:
                self.roots[target].receive(frame, sender, self.now)
            elif target in self.nodes:
                self._call(self.nodes[target], lambda a, f=frame, s=sender: a.receive(f, s, self.now))  # type: ignore[misc]
        for root in list(self.roots.values()):
            if (t := root.next_timer()) is not None and t <= self.now:
                root.handle_timer(self.now)
            self._root_actions(root)
        for rig in self.nodes.values():
            if rig.dead_until is not None and rig.dead_until <= self.now:
                rig.dead_until = None
                self._boot(rig)
            elif rig.agent is not None and (t := rig.agent.next_timer()) is not None and t <= self.now:
                self._call(rig, lambda a: a.handle_timer(self.now))
        return True

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        while self.now < until:
            if stop is not None and stop():
                return
            if not self.step():
                return
