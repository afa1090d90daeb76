"""`meshota gateway --metrics H:P`: /healthz, /readyz and Prometheus /metrics of a real gateway."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import httpx

from firmware_proto.aio.mqttsn_udp import UdpClient
from tests.support.broker import Mosquitto

MESHOTA = [sys.executable, "-m", "meshota"]


def _sessions(text: str) -> float:
    match = re.search(r"^meshota_mqttsn_sessions (\S+)$", text, re.M)
    assert match is not None, text
    return float(match.group(1))


def test_gateway_serves_probes_and_session_gauge(mosquitto: Mosquitto) -> None:
    proc = subprocess.Popen(
        [*MESHOTA, "gateway", "--broker", mosquitto.url, "--udp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        udp = re.search(r"udp 127\.0\.0\.1:(\d+)", banner)
        metrics = re.search(r"metrics (http://\S+)/metrics", banner)
        assert udp and metrics, banner
        base = metrics.group(1)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert _sessions(httpx.get(f"{base}/metrics").text) == 0

        async def node() -> float:
            async with UdpClient(("127.0.0.1", int(udp.group(1))), "metrics-node") as c:
                await c.publish("m/t", b"x", qos=1)
                async with httpx.AsyncClient() as h:
                    return _sessions((await h.get(f"{base}/metrics")).text)

        assert asyncio.run(node()) == 1
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_gateway_metrics_address_in_use_is_a_usage_error(mosquitto: Mosquitto) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*MESHOTA, "gateway", "--broker", mosquitto.url, "--udp", "127.0.0.1:0",
             "--metrics", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 2 and "--metrics" in done.stderr
