"""Stopping the MQTT bridge (``meshota server`` on SIGTERM): every request it already acknowledged
to the broker is answered before it goes; what arrives after it stopped reading stays with the
broker and is answered by the next bridge on the same persistent session. None is lost, none run
twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from bridge.api import ApiContext, Request, Response, Settings, build_router
from bridge.artifacts import BlobStore
from bridge.mqtt import BridgePolicy, MqttBridge, MqttBridgeConfig
from bridge.store import Store
from meshota.broker import start_mosquitto
from tests.support.mqtt import StampingCaller
from wire.envelope import RequestEnvelope, ResponseEnvelope, request_topic, response_topic

NEXT = "/api/devices/v1/deployments/device/deployments/next"


@pytest.mark.integration
def test_stop_answers_acknowledged_requests_and_leaves_the_rest_with_the_broker(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "mosquitto")
    caller = StampingCaller(broker.port)

    def send(rids: list[str]) -> None:
        for rid in rids:
            payload = RequestEnvelope(rid, "GET", query={"device_type": ["x"]}).encode()
            caller.publish(request_topic(NEXT), payload, "node-1")

    async def scenario() -> tuple[Counter[str], int]:
        store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
        await store.migrate()
        ctx = await ApiContext.create(store, BlobStore(tmp_path / "art"), Settings())
        router = build_router(ctx)
        executions: Counter[str] = Counter()
        handle = router.handle
        first_started = asyncio.Event()

        async def slow(request: Request) -> Response:
            executions[request.request_id] += 1
            first_started.set()
            await asyncio.sleep(0.05)
            return await handle(request)

        router.handle = slow  # type: ignore[method-assign]
        config = MqttBridgeConfig(
            "127.0.0.1", broker.port, policy=BridgePolicy(), group_max=1, max_concurrent=2
        )
        bridge = await MqttBridge(router, config).start()
        await asyncio.to_thread(send, [f"a{i}" for i in range(20)])
        await first_started.wait()
        busy_at_stop = bridge.busy()
        stopping = asyncio.create_task(bridge.stop(drain=30))
        await asyncio.sleep(0.1)  # reading paused: these stay with the broker
        await asyncio.to_thread(send, [f"b{i}" for i in range(5)])
        await stopping
        answered_before = {rid for rid in executions}
        second = await MqttBridge(router, config).start()  # same client id: the persistent session
        for _ in range(400):
            if len(executions) == 25:
                break
            await asyncio.sleep(0.05)
        await second.stop(drain=30)
        await store.close()
        assert all(rid.startswith("a") for rid in answered_before)
        return executions, busy_at_stop

    try:
        executions, busy_at_stop = asyncio.run(asyncio.wait_for(scenario(), 60))
        assert busy_at_stop > 1  # the stop really found acknowledged requests still to answer
        assert executions == Counter({**{f"a{i}": 1 for i in range(20)}, **{f"b{i}": 1 for i in range(5)}})
        for rid in [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(5)]:
            reply = ResponseEnvelope.decode(caller.wait(response_topic("node-1", rid)))
            assert reply.status == 401  # answered for real (no token)
    finally:
        caller.client.loop_stop()
        caller.client.disconnect()
        broker.stop()
