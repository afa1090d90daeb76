"""Broker restart mid-load: the bridge reconnects, no request is lost, none is run twice.

The real mosquitto is stopped and started again on the same port while N devices (one MQTT
connection each, as the gateway's transparent mode opens them) keep sending requests. A device
re-sends a request under the same id when no reply came in time (what a node does after an
MQTT-SN retry timeout); the bridge's dedupe cache answers such copies from the first reply.
Executions are counted in the router, server-side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.api import ApiContext, Request, Response, Settings, build_router
from bridge.artifacts import BlobStore
from bridge.mqtt import BridgePolicy, MqttBridge, MqttBridgeConfig
from bridge.store import Store
from meshota.broker import MosquittoProcess, start_mosquitto
from wire.envelope import (
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
    RequestEnvelope,
    ResponseEnvelope,
    request_topic,
)

NEXT = "/api/devices/v1/deployments/device/deployments/next"
DEVICES = 16
PER_DEVICE = 25
RETRY_AFTER = 1.0


class Device:
    """Sends its requests one after another; re-sends the same id until answered; reconnects."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.replies: dict[str, list[bytes]] = {}
        self.answered = asyncio.Event()
        self.props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self.props.UserProperty = [(DEVICE_PROPERTY, name), (VERIFIED_PROPERTY, "1")]
        self.published: Counter[str] = Counter()  # copies sent per request id
        self.connections = 0

    async def run(self, progress: Counter[str]) -> None:
        rids = [f"{self.name}-q{i}" for i in range(PER_DEVICE)]
        index = 0
        while index < len(rids):
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.name, protocol=aiomqtt.ProtocolVersion.V5
                ) as client:
                    # the restarted broker (persistence off) forgot every session: subscribe again
                    await client.subscribe(f"/mender/responses/{self.name}/#", qos=1)
                    self.connections += 1
                    messages = client.messages
                    while index < len(rids):
                        rid = rids[index]
                        payload = RequestEnvelope(rid, "GET", query={"device_type": ["x"]}).encode()
                        await client.publish(
                            request_topic(NEXT), payload, qos=1, properties=self.props, timeout=1
                        )
                        self.published[rid] += 1
                        deadline = time.monotonic() + RETRY_AFTER
                        while rid not in self.replies:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            with contextlib.suppress(TimeoutError):
                                msg = await asyncio.wait_for(anext(messages), left)
                                got = msg.topic.value.rsplit("/", 1)[1]
                                assert isinstance(msg.payload, bytes)
                                self.replies.setdefault(got, []).append(msg.payload)
                        if rid in self.replies:
                            index += 1
                            progress["answered"] += 1
                        # else: the same id again (after a reconnect too): from the cache if it ran
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


@pytest.mark.integration
@pytest.mark.parametrize("reply_qos", [1, 0])
def test_broker_restart_mid_load_loses_nothing_runs_nothing_twice(tmp_path: Path, reply_qos: int) -> None:
    async def scenario() -> None:
        broker: MosquittoProcess = start_mosquitto(tmp_path / "mosquitto")
        port = broker.port
        store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
        await store.migrate()
        ctx = await ApiContext.create(store, BlobStore(tmp_path / "art"), Settings())
        router = build_router(ctx)
        executions: Counter[str] = Counter()
        handle = router.handle

        async def counting(request: Request) -> Response:
            executions[request.request_id] += 1
            return await handle(request)

        router.handle = counting  # type: ignore[method-assign]
        config = MqttBridgeConfig(
            "127.0.0.1", port, policy=BridgePolicy(), reconnect_delay=0.1, reply_qos=reply_qos
        )
        bridge = await MqttBridge(router, config).start()
        progress: Counter[str] = Counter()
        devices = [Device(f"node-{i:02d}", port) for i in range(DEVICES)]
        tasks = [asyncio.create_task(d.run(progress)) for d in devices]
        try:
            total = DEVICES * PER_DEVICE
            while progress["answered"] < total // 3:
                await asyncio.sleep(0.01)
            broker.stop()  # mid-load: requests in flight in every state
            broker = start_mosquitto(tmp_path / "mosquitto", port=port)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)
        finally:
            for task in tasks:
                task.cancel()
            await bridge.stop()
            broker.stop()
            await store.close()
        assert progress["answered"] == total
        assert bridge.stats.reconnects >= 1
        rids = {f"{d.name}-q{i}" for d in devices for i in range(PER_DEVICE)}
        # every request answered (and only requests that were sent) ...
        assert set().union(*(d.replies for d in devices)) == rids
        # ... executed exactly once server-side, every copy of a reply the same bytes
        assert {rid: n for rid, n in executions.items() if n != 1} == {}
        assert set(executions) == rids
        for d in devices:
            for rid, copies in d.replies.items():
                assert len(set(copies)) == 1, (rid, len(copies))
                assert ResponseEnvelope.decode(copies[0]).status == 401  # no token: a real answer
        # the restart cut every device off mid-load (copies re-sent: sum(published) - len(rids))
        assert all(d.connections >= 2 for d in devices)

    asyncio.run(scenario())
