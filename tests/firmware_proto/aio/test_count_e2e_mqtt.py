"""Issue 18 part 4 over the real stack: 1 root + 8 nodes count themselves for a week (on a clock
that starts seconds before the week ends), every device API call over MQTT-SN (DTLS PSK, through
a relay) → real gateway → real mosquitto → real bridge + server. Each :class:`NodeRunner` owns its
:class:`NodeCountUdp` and reports its inventory at its owner's level, sealed through the root; the
root tallies its children and itself and, once the week has ended, sends ONE sealed count record
per cell on its bulk uplink. The server adds it to the public ``nodes-mesh`` series once, even
when the root sends it again.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware_proto.aio.count_udp import NodeCountUdp, RootCountUdp
from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.group_runners import NodeRunner
from firmware_proto.aio.group_udp import GroupUdpEndpoint
from firmware_proto.aio.sealed_uplink_udp import RecordCollectorUdp, SealedUplinkUdp
from firmware_proto.counting import NodeCounter, RootCounter
from firmware_proto.dtls_client import PskClientConfig
from firmware_proto.inventory_levels import NodeInventory
from firmware_proto.sealed_uplink import RecordBatcher, SealedRecordSender
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import install_initial_image
from firmware_proto.update_agent import AgentConfig
from tests.support.broker import free_port
from tests.support.mqtt_stack import ServerSide, gateway_side, server_side
from wire.countme import CountRecord, decode_count_record, window_of, window_start
from wire.sealed import derive_record_key

NODES = 8
ROOT_ID = "root-0"
NODE_IDS = [f"node-{i:02d}" for i in range(1, NODES + 1)]
PSKS = {name: bytes([i + 31]) * 16 for i, name in enumerate([ROOT_ID, *NODE_IDS])}
LEAD = 10.0  # seconds of the week left when the devices start counting


@pytest.mark.integration
def test_root_counts_its_children_into_one_sealed_record_per_cell(tmp_path: Path) -> None:
    with server_side(tmp_path, PSKS, public_stats=True) as side:
        asyncio.run(_scenario(side))


async def _scenario(side: ServerSide) -> None:
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(gateway_side(side, PSKS))
        devices: dict[str, MqttSnDevice] = {}
        for i, name in enumerate([ROOT_ID, *NODE_IDS]):
            client = DtlsUdpClient(
                gw.relay_address, name, dtls=PskClientConfig(name, PSKS[name]), retry_interval=1.0
            )
            await stack.enter_async_context(client)
            device = MqttSnDevice(client, name, f"02:00:00:00:cc:{i:02x}", block_size=512, timeout=10)
            devices[name] = await stack.enter_async_context(device)
        assert await asyncio.gather(*(d.authenticate() for d in devices.values())) == [401] * (NODES + 1)
        await asyncio.to_thread(side.accept_pending)
        assert await asyncio.gather(*(d.authenticate() for d in devices.values())) == [200] * (NODES + 1)
        ids = side.mender_ids()

        root_dev = devices[ROOT_ID]

        async def send_batch(records: Sequence[bytes]) -> Sequence[bytes | int]:
            return (await root_dev.send_batch(records)).entries

        collector = await RecordCollectorUdp(RecordBatcher(window=0.3), send_batch).open()
        stack.callback(collector.close)

        # the server's week is this one; the devices' clock starts LEAD s before last week ends
        week = window_of(time.time()) - 1
        offset = window_start(week + 1) - LEAD - time.time()

        def clock() -> float:
            return time.time() + offset

        root_flash = MemoryFlash(4096)
        root_uplink = await SealedUplinkUdp(
            SealedRecordSender(derive_record_key(ROOT_ID, PSKS[ROOT_ID]), root_flash), collector.address
        ).open()
        stack.callback(root_uplink.close)
        sent: list[bytes] = []
        deliver = RootCountUdp.sealed_delivery(root_uplink)

        async def deliver_logged(record: bytes) -> int | None:
            sent.append(record)
            return await deliver(record)

        own = NodeCounter(root_flash, NodeInventory("esp32-c6", "v1"), random.Random(0))
        root_count = await RootCountUdp(
            RootCounter(root_flash, commit_interval=0.2), deliver_logged, own=own, clock=clock
        ).open()
        stack.callback(root_count.close)

        group = ("239.255.77.8", free_port(2))
        config = AgentConfig(
            map_key=ed25519.Ed25519PrivateKey.generate().public_key(),
            image_ok=lambda _image: True,
            fallback_timeout=30.0,
            want_interval=0.5,
        )
        nodes: list[NodeRunner] = []
        for i, name in enumerate(NODE_IDS):
            flash = MemoryFlash(8192)
            install_initial_image(flash, b"factory image", "v1")
            ep = await GroupUdpEndpoint(group).open()
            stack.callback(ep.close)
            sender = SealedRecordSender(derive_record_key(name, PSKS[name]), flash)
            uplink = await SealedUplinkUdp(sender, collector.address, timeout=5.0).open()
            stack.callback(uplink.close)
            inv = NodeInventory("esp32-c6", "v1", "rev-b", "ble-mesh", ("n1", "n2"))
            counter = await NodeCountUdp(
                NodeCounter(flash, inv, random.Random(i)), root_count.address, clock=clock
            ).open()
            stack.callback(counter.close)
            level = "full" if i == 0 else "minimal"
            nodes.append(
                NodeRunner(
                    flash, ep, devices[name], config, random.Random(i), lambda _image: True,
                    uplink=uplink, counter=counter, inventory=inv, inventory_level=level,
                )
            )  # fmt: skip

        async def until(check: object, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not callable(check) or not check():
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.1)

        # every node counted by its root within the week, the root too; nothing sealed yet
        await until(lambda: all(n.counter is not None and n.counter.counter.counted for n in nodes), LEAD)
        assert clock() < window_start(week + 1) and root_count.counter.window == week
        assert own.counted and root_count.counter.tally() == {(1, "v1", "esp32-c6"): NODES + 1}
        assert sent == []
        # after the week: one sealed count record for the one cell, answered 204 by the server
        await until(lambda: root_count.answers == [204], LEAD + 20)
        assert [decode_count_record(r) for r in sent] == [CountRecord(week, 1, "v1", "esp32-c6", NODES + 1)]
        assert root_count.counter.pending() == []
        # sent again (say its answer was lost): a new sealed record, the same count, added once
        assert await deliver(sent[0]) == 204

        doc = json.loads(side.mgmt.get("/stats/fleet/weekly.json").content)
        text = json.dumps(doc)
        assert '"nodes-mesh"' in text and f'"count": {NODES + 1}' in text
        assert f'"count": {2 * (NODES + 1)}' not in text
        # no per-node count message reached the server: one fleet_counts call per record sent
        counts = [path for _, path, _, _ in side.seen if path.endswith("/fleet_counts")]
        assert len(counts) == 2
        # no count frame went through the sealed-record collector: counting has its own hop
        assert not any(d.startswith(b"\x43") for d in collector.seen)

        # inventory at each owner's level, sealed through the root
        await until(lambda: all(n.inventory_reports for n in nodes), 10)
        assert all(n.inventory_reports == [200] for n in nodes)
        for i, name in enumerate(NODE_IDS):
            inv = side.mgmt.get(f"/api/management/v1/inventory/devices/{ids[devices[name].mac]}").json()
            names = {a["name"] for a in inv["attributes"]}
            assert {"device_type", "artifact_name"} <= names
            assert ("hardware" in names and "neighbours" in names) == (i == 0)
        assert all(n.direct_reports == 0 for n in nodes)
