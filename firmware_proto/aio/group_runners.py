"""asyncio drivers that connect the group cores to a device session, whatever its transport.

:class:`RootRunner` carries out a :class:`GroupStreamRoot`'s actions (fetch each artifact and its
chunk map once, block-wise, over the root's own :class:`DeviceApi`) and, with a
:class:`~firmware_proto.mesh_report.MeshReporter`, sends the stream's progress reports over that
same session (one call in flight; a newer report of the same stream replaces a waiting one; a
failure is logged once and dropped: the next report carries the newer state); :class:`NodeRunner` carries
out an :class:`UpdateAgent`'s (statuses, fallback ranges and maps, reboots). The device session
is :class:`~firmware_proto.aio.device_http.HttpDevice` or
:class:`~firmware_proto.aio.device_mqttsn.MqttSnDevice`; with a :class:`SealedUplinkUdp` the node's
statuses travel as sealed records through its root instead (falling back to its own session
after ``sealed_attempts`` unanswered tries). A node with an ``inventory`` reports it at its owner's
``inventory_level`` (firmware_proto/inventory_levels.py) after every boot, sealed through its root
when it has an uplink; a node with a ``counter`` (:class:`NodeCountUdp`) reports itself to its
root once per countme window, under the version it booted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from firmware_proto import boot as bootmod
from firmware_proto.aio.count_udp import NodeCountUdp
from firmware_proto.aio.group_udp import GroupUdpEndpoint
from firmware_proto.aio.sealed_uplink_udp import SealedUplinkUdp
from firmware_proto.checkin import CheckinSchedule
from firmware_proto.device_api import DeviceApi, DeviceApiError
from firmware_proto.flash_store import FlashStore
from firmware_proto.group_stream import FetchArtifact, GroupStreamRoot, StreamFinished
from firmware_proto.inventory_levels import NodeInventory, inventory_attributes
from firmware_proto.mesh_report import MeshReporter
from firmware_proto.update_agent import AgentConfig, FetchMap, FetchRange, Reboot, ReportStatus, UpdateAgent
from wire.install_policy import InstallPolicy, PolicyError
from wire.mesh_report import MeshReportError, decode_mesh_report
from wire.sealed import RecordOp

__all__ = [
    "DELIVERED",
    "NodeRunner",
    "RootRunner",
]

DELIVERED = (200, 204)
_log = logging.getLogger(__name__)


class RootRunner:
    """A root: its own device session fetches each artifact once; the core streams it; with a
    ``reporter`` its progress reports go over the same session."""

    def __init__(
        self,
        core: GroupStreamRoot,
        endpoint: GroupUdpEndpoint,
        device: DeviceApi,
        *,
        reporter: MeshReporter | None = None,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.device = device
        self.reporter = reporter
        self.tasks: set[asyncio.Task[None]] = set()
        # mesh reports: sent (stored, 204), refused (another status) or failed (no answer)
        self.reports_sent = 0
        self.report_bytes = 0
        self.reports_refused: list[int] = []
        self.reports_failed = 0
        self._waiting: dict[bytes, bytes] = {}  # stream id → newest unsent report (bounded by streams)
        self._sending: asyncio.Task[None] | None = None
        self._report_timer: asyncio.TimerHandle | None = None
        self._logged = False
        self._look_at = 0.0
        endpoint.attach(core, self._collect)

    def _collect(self) -> None:
        ended = False
        for action in self.core.actions():
            if isinstance(action, FetchArtifact):
                task = asyncio.get_running_loop().create_task(self._fetch(action))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            ended = ended or isinstance(action, StreamFinished)
        # look at the progress only when a stream ended or a report may be due (not per frame)
        if self.reporter is not None and (ended or asyncio.get_running_loop().time() >= self._look_at):
            self._reports_due()

    # -- mesh reports ----------------------------------------------------------------------------------
    def _reports_due(self) -> None:
        assert self.reporter is not None
        loop = asyncio.get_running_loop()
        self.reporter.max_bytes = self.device.mesh_report_room()
        for body in self.reporter.due(loop.time()):
            try:
                self._waiting[decode_mesh_report(body).stream_id] = body
            except MeshReportError:  # cannot happen for our own encoder's output; never fatal
                continue
        if self._waiting and (self._sending is None or self._sending.done()):
            self._sending = loop.create_task(self._send_reports())
            self.tasks.add(self._sending)
            self._sending.add_done_callback(self.tasks.discard)
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        when = self.reporter.next_timer()
        self._look_at = when if when is not None else loop.time() + self.reporter.interval
        if when is not None:  # a running stream reports even while nothing else happens
            self._report_timer = loop.call_at(max(when, loop.time()), self._reports_due)

    async def _send_reports(self) -> None:
        while self._waiting:
            sid = next(iter(self._waiting))
            body = self._waiting.pop(sid)
            try:
                status = await self.device.mesh_report(body)
            except DeviceApiError as exc:
                self.reports_failed += 1
                self._log_once(f"mesh report not delivered: {exc}")
                continue
            if status == 204:
                self.reports_sent += 1
                self.report_bytes += len(body)
            else:
                self.reports_refused.append(status)
                self._log_once(f"mesh report refused by the server: {status}")

    def reports_pending(self) -> bool:
        """A report waits or is on its way, or a running stream's final report is still to come."""
        if self._waiting or (self._sending is not None and not self._sending.done()):
            return True
        return self.reporter is not None and any(not p.finished for p in self.core.progress())

    def _log_once(self, message: str) -> None:
        if not self._logged:
            self._logged = True
            _log.warning("%s (further failures are counted, not logged)", message)

    def close(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None

    async def _fetch(self, action: FetchArtifact) -> None:
        loop = asyncio.get_running_loop()
        try:
            artifact = await self.device.fetch_artifact(action.uri)
            cmap = await self.device.fetch_map(action.artifact_id, action.chunk_size)
        except DeviceApiError:
            self.core.fetch_failed(action.artifact_id, loop.time())
        else:
            self.core.artifact_fetched(action.artifact_id, artifact, cmap, loop.time())
            self._look_at = 0.0  # a stream starts: its first report
        self.endpoint.kick()


def _install_policy(found: dict[str, Any], now: float) -> InstallPolicy | None:
    """``meshota.install`` of a ``next`` answer on this loop's clock (windows are UTC seconds);
    a malformed one never installs (it waits for the next check-in's)."""
    extra = found.get("meshota")
    raw = extra.get("install") if isinstance(extra, dict) else None
    if raw is None:
        return None
    try:
        policy = InstallPolicy.from_next(raw) if isinstance(raw, dict) else None
    except PolicyError:
        policy = None
    if policy is None:
        return InstallPolicy("ask-first", (), 0.0)
    return policy.shifted(now - time.time())


class NodeRunner:
    """One node: update agent on the group link, its own session for next/status/fallback."""

    def __init__(
        self,
        flash: FlashStore,
        endpoint: GroupUdpEndpoint,
        device: DeviceApi,
        config: AgentConfig,
        rng: random.Random,
        image_ok: Callable[[bytes], bool],
        *,
        uplink: SealedUplinkUdp | None = None,
        sealed_attempts: int = 3,
        counter: NodeCountUdp | None = None,
        inventory: NodeInventory | None = None,
        inventory_level: str = "minimal",
        checkin_interval: float = 1800.0,
    ) -> None:
        self.flash = flash
        self.endpoint = endpoint
        self.device = device
        self.config = config
        self.rng = rng
        self.image_ok = image_ok
        self.uplink = uplink
        self.sealed_attempts = sealed_attempts
        self.counter = counter
        self.inventory = inventory
        self.inventory_level = inventory_level
        if inventory is not None:
            inventory_attributes(inventory, inventory_level)  # a bad level fails here, not later
        self.inventory_reports: list[int] = []  # the server's status for each inventory report
        # when to call home next: the owner's interval (from next) with 0.5-1.5x jitter
        self.checkin = CheckinSchedule(checkin_interval, random.Random(rng.random()))
        self.reboots = 0
        self.sealed_reports = 0
        self.direct_reports = 0
        self.delivered: list[tuple[str, str]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._report_order = asyncio.Lock()  # statuses reach the server in the order they happened
        self._retired_chunks = 0  # chunks verified by the agents of earlier boots
        self.agent = self._boot()

    def _boot(self) -> UpdateAgent:
        previous: UpdateAgent | None = getattr(self, "agent", None)
        if previous is not None:
            self._retired_chunks += previous.chunks_verified
        booted = bootmod.boot(self.flash, self.image_ok)
        agent = UpdateAgent(self.flash, self.endpoint, self.config, self.rng, booted)
        self.agent = agent
        agent.start(asyncio.get_running_loop().time())
        self.endpoint.attach(agent, self._collect)
        if self.counter is not None:
            self.counter.reboot(agent.running_artifact)
        if self.inventory is not None:
            self._spawn(self._report_inventory(agent.running_artifact))
        return agent

    @property
    def running_artifact(self) -> str:
        return self.agent.running_artifact

    @property
    def chunks_verified(self) -> int:
        """Chunks checked against a signed chunk map and kept, over every boot of this runner."""
        return self._retired_chunks + self.agent.chunks_verified

    async def check_for_update(self, device_type: str) -> bool:
        """The node's own ``next`` over its session; True when it learned a deployment."""
        found = await self.device.next_deployment(self.running_artifact, device_type)
        if found is None:
            return False
        art = found["artifact"]
        now = asyncio.get_running_loop().time()
        self.checkin.update_from_next(found)
        self.agent.deployment_learned(
            found["id"],
            art["id"],
            art["artifact_name"],
            art["source"]["uri"],
            now,
            _install_policy(found, now),
        )
        self.endpoint.kick()
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _collect(self) -> None:
        for action in self.agent.actions():
            if isinstance(action, ReportStatus):
                self._spawn(self._report(self.agent, action))
            elif isinstance(action, FetchRange):
                self._spawn(self._range(action))
            elif isinstance(action, FetchMap):
                self._spawn(self._map(action))
            elif isinstance(action, Reboot):
                self.reboots += 1
                asyncio.get_running_loop().call_soon(self._boot)
                return

    async def _report_inventory(self, version: str) -> None:
        """The inventory at the owner's level, under the version this boot runs."""
        assert self.inventory is not None
        inv = NodeInventory(
            self.inventory.device_type, version, self.inventory.hardware, self.inventory.radio,
            self.inventory.neighbours,
        )  # fmt: skip
        attributes = inventory_attributes(inv, self.inventory_level)
        status: int | None = None
        if self.uplink is not None:
            for _ in range(self.sealed_attempts):
                try:
                    status = (await self.uplink.call(RecordOp.INVENTORY_PUT, "", attributes)).status
                except DeviceApiError:
                    continue
                if status is not None:
                    break
        if status is None:
            try:
                status = await self.device.put_inventory(attributes)
            except DeviceApiError:
                return  # reported again after the next boot
        self.inventory_reports.append(status)

    async def _report(self, agent: UpdateAgent, action: ReportStatus) -> None:
        async with self._report_order:
            status = await self._sealed_status(action) if self.uplink is not None else None
            if status is None:
                try:
                    status = await self.device.put_status(
                        action.deployment_id, action.status, action.substate
                    )
                except DeviceApiError:
                    return  # a final status stays in flash (record ``report``) for the next boot
                self.direct_reports += 1
            if status in DELIVERED:
                self.delivered.append((action.deployment_id, action.status))
                agent.status_delivered(action.deployment_id, action.status)

    async def _sealed_status(self, action: ReportStatus) -> int | None:
        """The server's status for the sealed report, or None when the root never answered."""
        assert self.uplink is not None
        for _ in range(self.sealed_attempts):
            try:
                answer = await self.uplink.call(
                    RecordOp.STATUS, action.deployment_id, {"status": action.status}
                )
            except DeviceApiError:
                continue
            if answer.status is not None:
                self.sealed_reports += 1
                return answer.status
            # refused (e.g. replay window, batch lost): a new record with a new sequence number
        return None

    async def _range(self, action: FetchRange) -> None:
        try:
            data = await self.device.fetch_range(action.uri, action.offset, action.length)
        except DeviceApiError:
            self.agent.fetch_failed(asyncio.get_running_loop().time())
        else:
            self.agent.range_fetched(action.offset, data, asyncio.get_running_loop().time())
        self.endpoint.kick()

    async def _map(self, action: FetchMap) -> None:
        try:
            data = await self.device.fetch_map(action.artifact_id, action.chunk_size)
        except DeviceApiError:
            self.agent.fetch_failed(asyncio.get_running_loop().time())
        else:
            self.agent.map_fetched(data, asyncio.get_running_loop().time())
        self.endpoint.kick()
