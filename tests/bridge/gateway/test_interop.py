"""Interop: a third-party MQTT-SN client (PyPI mqtt-sn-12, its own CLI tools) through our gateway.

Nobody here wrote that client; it runs as a subprocess against the gateway in this process, and a
paho MQTT client on a real mosquitto sees the traffic.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from bridge.gateway.udp import GatewayServer
from mqttsn import GatewayConfig, PredefinedTopics
from tests.support.broker import Mosquitto

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: pip install mqtt-sn-12 (scripts/setup.sh installs it)")
    return path


class Collector:
    """A paho MQTT subscriber on the real broker."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.qos))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, 2)
        self.client.loop_start()

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, int]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < n and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _run(*args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["transparent", "aggregating"])
def test_mqtt_sn_12_publishes_all_qos_through_gateway(mosquitto: Mosquitto, mode: str) -> None:
    async def main() -> None:
        predefined = PredefinedTopics.parse("*, interop/predef, 5\n")
        config = GatewayConfig(mode=mode, predefined=predefined)  # type: ignore[arg-type]
        async with GatewayServer(config, (mosquitto.host, mosquitto.port), ("127.0.0.1", 0)) as gw:
            port = str(gw.address[1])
            sub = Collector(mosquitto, "interop/#")
            try:
                await asyncio.sleep(0.2)
                for qos in ("0", "1", "2"):
                    rc, out, err = await _run(
                        _tool("mqtt_sn_pub"), "-h", "127.0.0.1", "-p", port, "-i", f"tp-{qos}",
                        "-t", "interop/normal", "-m", f"hello q{qos}", "-q", qos,
                    )  # fmt: skip
                    assert rc == 0, (out, err)
                rc, out, err = await _run(
                    _tool("mqtt_sn_pub"), "-h", "127.0.0.1", "-p", port, "-i", "tp-pre",
                    "-T", "5", "-m", "predefined", "-q", "1",
                )  # fmt: skip
                assert rc == 0, (out, err)
                got = await sub.wait_for(4)
            finally:
                sub.close()
        assert sorted(got) == sorted(
            [
                ("interop/normal", b"hello q0", 0),
                ("interop/normal", b"hello q1", 1),
                ("interop/normal", b"hello q2", 2),
                ("interop/predef", b"predefined", 1),
            ]
        )

    asyncio.run(main())


@pytest.mark.integration
def test_mqtt_sn_12_subscriber_receives_broker_messages(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with GatewayServer(GatewayConfig(), (mosquitto.host, mosquitto.port), ("127.0.0.1", 0)) as gw:
            port = str(gw.address[1])
            proc = await asyncio.create_subprocess_exec(
                _tool("mqtt_sn_sub"), "-h", "127.0.0.1", "-p", port, "-i", "tp-sub",
                "-t", "interop/down/#", "-q", "1", "-1",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            pub.connect(mosquitto.host, mosquitto.port)
            pub.loop_start()
            assert proc.stdout is not None
            try:
                # publish until the subscriber (which needs time to SUBSCRIBE) prints its line
                line = b""
                for _ in range(100):
                    pub.publish("interop/down/x", b"to the sensor", 1)
                    try:
                        line = await asyncio.wait_for(proc.stdout.readline(), 0.2)
                        break
                    except TimeoutError:
                        continue
                rc = await asyncio.wait_for(proc.wait(), 10)
            finally:
                pub.loop_stop()
                pub.disconnect()
                if proc.returncode is None:
                    proc.kill()
            assert line.decode().strip() == "to the sensor"
            assert rc == 0

    asyncio.run(main())
