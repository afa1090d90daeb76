"""Aggregating mode under a QoS 1 burst, both ways, on a real mosquitto: every message arrives,
every broker message is acknowledged once its nodes acknowledged it, and nothing is logged at
WARNING (the former aiomqtt link logged "There are N pending publish calls" for almost every
message)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.gateway.udp import GatewayServer
from bridge.mqtt5 import ConnectOptions, Mqtt5Client
from firmware_proto.aio.mqttsn_udp import UdpClient
from mqttsn import GATEWAY_CONN, GatewayConfig
from tests.support.broker import Mosquitto

pytestmark = pytest.mark.integration

NODES, UP, DOWN = 10, 30, 40


def test_qos1_burst_in_aggregating_mode_logs_no_warning(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def main() -> tuple[list[int], int, int]:
        config = GatewayConfig(mode="aggregating", max_unverified_per_source=NODES)
        async with GatewayServer(config, (mosquitto.host, mosquitto.port), ("127.0.0.1", 0)) as gw:
            upstream: list[bytes] = []
            watcher, _ = await Mqtt5Client.connect(
                mosquitto.host,
                mosquitto.port,
                ConnectOptions("watcher"),
                lambda m: upstream.append(m.payload),
            )
            await watcher.subscribe([("burst/up/#", 1)])
            nodes = [UdpClient(gw.address, f"burst-{i}") for i in range(NODES)]
            for c in nodes:
                await c.__aenter__()
                await c.subscribe("burst/down", 1)
            received = [0] * NODES

            async def node(i: int) -> None:
                async def count() -> None:
                    async for _ in nodes[i].messages:
                        received[i] += 1
                        if received[i] == DOWN:
                            return

                counting = asyncio.ensure_future(count())
                for k in range(UP):
                    await nodes[i].publish(f"burst/up/{i}", b"%d" % k, qos=1)
                await asyncio.wait_for(counting, 30)

            for k in range(DOWN):
                watcher.publish("burst/down", b"d%d" % k, 1)
            await asyncio.gather(*(node(i) for i in range(NODES)))
            for _ in range(200):
                if len(upstream) >= NODES * UP:
                    break
                await asyncio.sleep(0.02)
            link_conn = gw.link._conns[GATEWAY_CONN]
            assert link_conn.client is not None
            await asyncio.sleep(0.1)  # the last PUBACKs to the broker leave
            unacked = link_conn.client.session.unacked_in
            for c in nodes:
                await c.__aexit__(None, None, None)
            watcher.close()
            return received, len(upstream), unacked

    received, upstream, unacked = asyncio.run(main())
    assert received == [DOWN] * NODES and upstream == NODES * UP
    assert unacked == 0  # every broker message acknowledged after its nodes' PUBACKs
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
