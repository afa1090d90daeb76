"""The node side of the live demo: a root and N nodes, each with its own sockets on loopback.

Every device (root and nodes) has its own DTLS (PSK) session through the relay process to the
gateway, and its own :class:`~firmware_proto.aio.device_mqttsn.MqttSnDevice` for the Mender device
API. The root also has the group stream's multicast endpoint and the sealed-record collector;
each node has a multicast endpoint, a sealed uplink to its root and a
:class:`~firmware_proto.flash_store.FileFlash` (two image slots and its records as files in its
own directory), provisioned at the factory with the old image. Every node also reports its
inventory (level ``minimal``) sealed through the root after each boot, and counts itself once per
countme week with its :class:`NodeCountUdp` (owned by its :class:`NodeRunner`); the root tallies
them and itself (:class:`RootCountUdp`, its tally in its own file flash) and seals one count
record per cell after the week. The root reports its stream's progress (a
:class:`~firmware_proto.mesh_report.MeshReporter`, nodes named by their device ids) over its own
MQTT-SN session, as a real root does. The drivers are ``firmware_proto.aio``'s: :class:`RootRunner`,
:class:`NodeRunner`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware_proto import boot as bootmod
from firmware_proto.aio.count_udp import NodeCountUdp, RootCountUdp
from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.group_runners import NodeRunner, RootRunner
from firmware_proto.aio.group_udp import GroupUdpEndpoint
from firmware_proto.aio.sealed_uplink_udp import RecordCollectorUdp, SealedUplinkUdp
from firmware_proto.counting import NodeCounter, RootCounter
from firmware_proto.dtls_client import PskClientConfig
from firmware_proto.flash_store import FileFlash, FlashStore
from firmware_proto.group_stream import GroupStreamRoot, RootConfig
from firmware_proto.inventory_levels import NodeInventory
from firmware_proto.mesh_report import MeshReporter
from firmware_proto.sealed_uplink import RecordBatcher, SealedRecordSender
from firmware_proto.update_agent import AgentConfig
from wire.sealed import derive_record_key

__all__ = ["FlashCheck", "Fleet", "check_flash", "provision_factory_image", "slot_size_for"]


def slot_size_for(*images: bytes) -> int:
    """The smallest power of two (at least 4 KiB) every image fits in."""
    return max(4096, 1 << (max(len(i) for i in images) - 1).bit_length())


def provision_factory_image(flash: FlashStore, image: bytes, name: str) -> None:
    """The factory's state: ``image`` confirmed in slot 0 (sequence 0: any signed map is newer)."""
    flash.write_slot(0, 0, image)
    info = bootmod.SlotInfo(len(image), hashlib.sha256(image).digest(), 0, name)
    bootmod.write_slot_info(flash, 0, info)
    bootmod.confirm(flash, 0)


@dataclass(frozen=True)
class FlashCheck:
    ok: bool
    artifact: str  # what the bootloader would boot now ("" if nothing valid)
    slot: int
    detail: str


def check_flash(
    directory: Path, slot_size: int, image_ok: Callable[[bytes], bool], want: bytes
) -> FlashCheck:
    """Read a node's flash back from its files (a fresh instance, as after a power cycle): the
    confirmed active slot holds ``want``, its signature checks, no trial boot is pending."""
    flash = FileFlash(directory, slot_size)
    state = bootmod.read_boot(flash)
    info = bootmod.read_slot_info(flash, state.active)
    image = bootmod.slot_image(flash, state.active)
    name = info.artifact_name if info is not None else ""
    if image is None or not image_ok(image):
        return FlashCheck(False, "", state.active, "no valid signed image in the active slot")
    if state.trial is not None:
        return FlashCheck(False, name, state.active, f"trial boot of slot {state.trial} pending")
    if image != want:
        return FlashCheck(False, name, state.active, "active slot holds another image")
    return FlashCheck(True, name, state.active, "")


class Fleet:
    """The root ``names[0]`` and its nodes ``names[1:]``, all talking through ``relay``."""

    def __init__(
        self,
        stack: AsyncExitStack,
        relay: tuple[str, int],
        psks: dict[str, bytes],
        flash_dir: Path,
        *,
        block_size: int = 512,
        timeout: float = 10.0,
    ) -> None:
        self.stack = stack
        self.relay = relay
        self.psks = psks
        self.names = list(psks)
        self.flash_dir = flash_dir
        self.block_size = block_size
        self.timeout = timeout
        self.devices: dict[str, MqttSnDevice] = {}
        self.nodes: dict[str, NodeRunner] = {}
        self.root: RootRunner | None = None
        self.collector: RecordCollectorUdp | None = None
        self.root_endpoint: GroupUdpEndpoint | None = None
        self.counting: RootCountUdp | None = None
        self.device_of: dict[Hashable, str] = {}  # a node's group-link address → its device id

    @property
    def root_name(self) -> str:
        return self.names[0]

    @property
    def node_names(self) -> list[str]:
        return self.names[1:]

    @staticmethod
    def mac(index: int) -> str:
        return f"02:00:00:00:{index >> 8:02x}:{index & 0xFF:02x}"

    async def connect(self, parallel: int = 8) -> None:
        """Every device: a DTLS handshake through the relay, MQTT-SN CONNECT, its reply topics."""
        gate = asyncio.Semaphore(parallel)

        async def one(index: int, name: str) -> None:
            async with gate:
                client = DtlsUdpClient(
                    self.relay, name, dtls=PskClientConfig(name, self.psks[name]), retry_interval=1.0
                )
                await self.stack.enter_async_context(client)
                device = MqttSnDevice(
                    client, name, self.mac(index), block_size=self.block_size, timeout=self.timeout
                )
                self.devices[name] = await self.stack.enter_async_context(device)

        await asyncio.gather(*(one(i, n) for i, n in enumerate(self.names)))

    async def authenticate(self) -> list[int]:
        """Every device's auth request, in ``names`` order: 401 while pending, 200 once accepted."""
        return list(await asyncio.gather(*(self.devices[n].authenticate() for n in self.names)))

    async def start_group(
        self,
        group: tuple[str, int],
        map_key: ed25519.Ed25519PublicKey,
        image_ok: Callable[[bytes], bool],
        factory: tuple[bytes, str],
        slot_size: int,
        *,
        device_type: str = "meshota-sim",
        count_spread: float = 2.0,
        device_ids: Mapping[str, str] | None = None,
        report_interval: float = 1.0,
    ) -> None:
        """The root's stream, collector, tally and mesh reporter; each node's file flash (factory
        image), group endpoint, sealed uplink, counter and update agent. ``count_spread``: nodes
        report within that many seconds of starting (a demo; 6 h on a real mesh).
        ``device_ids``: name → the server's device id, how the root names nodes in its reports
        (without: no reports); ``report_interval``: seconds between a running stream's reports."""
        root_dev = self.devices[self.root_name]

        async def send_batch(records: Sequence[bytes]) -> Sequence[bytes | int]:
            return (await root_dev.send_batch(records)).entries

        self.collector = await RecordCollectorUdp(RecordBatcher(window=0.3), send_batch).open()
        self.stack.callback(self.collector.close)
        self.root_endpoint = await GroupUdpEndpoint(group).open()
        self.stack.callback(self.root_endpoint.close)
        config = RootConfig(
            collection_window=1.0, chunk_size=1024, frame_interval=0.0005, reply_window_ms=200
        )
        core = GroupStreamRoot(self.root_endpoint, config)
        reporter = None
        if device_ids is not None:
            reporter = MeshReporter(core, report_interval, self._name_of)
        self.root = RootRunner(core, self.root_endpoint, root_dev, reporter=reporter)
        self.stack.callback(self.root.close)
        root_flash = FileFlash(self.flash_dir / self.root_name, 4096)
        root_sender = SealedRecordSender(
            derive_record_key(self.root_name, self.psks[self.root_name]), root_flash
        )
        root_uplink = await SealedUplinkUdp(root_sender, self.collector.address, timeout=5.0).open()
        self.stack.callback(root_uplink.close)
        own = NodeCounter(
            root_flash, NodeInventory(device_type, factory[1]), random.Random(0), spread=count_spread
        )
        self.counting = await RootCountUdp(
            RootCounter(root_flash, commit_interval=0.2), RootCountUdp.sealed_delivery(root_uplink), own=own
        ).open()
        self.stack.callback(self.counting.close)
        agent = AgentConfig(map_key=map_key, image_ok=image_ok, fallback_timeout=30.0, want_interval=0.5)
        for i, name in enumerate(self.node_names, start=1):
            flash = FileFlash(self.flash_dir / name, slot_size)
            provision_factory_image(flash, *factory)
            ep = await GroupUdpEndpoint(group).open()
            self.stack.callback(ep.close)
            if device_ids is not None and device_ids.get(name):
                self.device_of[ep.address] = device_ids[name]
            sender = SealedRecordSender(derive_record_key(name, self.psks[name]), flash)
            uplink = await SealedUplinkUdp(sender, self.collector.address, timeout=5.0).open()
            self.stack.callback(uplink.close)
            inventory = NodeInventory(device_type, factory[1])
            counter = NodeCounter(flash, inventory, random.Random(i), spread=count_spread)
            count = await NodeCountUdp(counter, self.counting.address).open()
            self.stack.callback(count.close)
            self.nodes[name] = NodeRunner(
                flash, ep, self.devices[name], agent, random.Random(i), image_ok, uplink=uplink,
                counter=count, inventory=inventory,
            )  # fmt: skip

    def _name_of(self, address: Hashable) -> str:
        """A stream member's device id (a stranger on the group: its address, which the server
        refuses to store)."""
        found = self.device_of.get(address)
        if found is not None:
            return found
        host, port = address if isinstance(address, tuple) else (str(address), 0)
        return f"{host}:{port}"

    async def check_for_update(self, device_type: str) -> list[bool]:
        """Each node's own ``next`` over its own end-to-end session."""
        return list(await asyncio.gather(*(n.check_for_update(device_type) for n in self.nodes.values())))

    def reports_pending(self) -> bool:
        """A node's status not yet delivered, or a root's mesh report still on its way."""
        if self.root is not None and self.root.reports_pending():
            return True
        return any(n.agent.pending_report() is not None for n in self.nodes.values())

    def counting_pending(self) -> bool:
        """Some node (or the root itself) not yet acknowledged by the root for this week."""
        if self.counting is None or self.counting.own is None or not self.counting.own.counted:
            return True
        return any(n.counter is None or not n.counter.counter.counted for n in self.nodes.values())
