"""`meshota gateway` as a user runs it: config errors exit 2 with one line; a real run bridges."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware_proto.aio.mqttsn_udp import UdpClient
from tests.support.broker import Mosquitto

MESHOTA = [sys.executable, "-m", "meshota"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MESHOTA, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--broker", "http://x:1", "--udp", "127.0.0.1:0"], "--broker"),
        (["--broker", "mqtt://127.0.0.1:1883", "--udp", "nowhere"], "--udp"),
        (["--broker", "mqtt://127.0.0.1:1883", "--udp", "127.0.0.1:99999"], "99999"),
        (["--broker", "mqtt://127.0.0.1:1883", "--udp", "127.0.0.1:0", "--gateway-id", "0"], "--gateway-id"),
        (
            ["--broker", "mqtt://127.0.0.1:1883", "--udp", "127.0.0.1:0", "--predefined-topics", "/no/such"],
            "/no/such",
        ),
        (
            ["--broker", "mqtt://127.0.0.1:1883", "--udp", "127.0.0.1:0", "--max-packet-size", "4"],
            "--max-packet-size",
        ),
    ],
)
def test_config_errors_exit_2_with_one_line_naming_the_value(args: list[str], needle: str) -> None:
    r = run_cli("gateway", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_bad_predefined_line_is_named(tmp_path: Path) -> None:
    f = tmp_path / "topics.conf"
    f.write_text("*, ok/topic, 1\n*, broken\n")
    r = run_cli(
        "gateway", "--broker", "mqtt://127.0.0.1:1", "--udp", "127.0.0.1:0", "--predefined-topics", str(f)
    )
    assert r.returncode == 2
    assert f"{f}:2" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_command_and_help() -> None:
    assert run_cli("frobnicate").returncode == 2
    r = run_cli("--help")
    assert r.returncode == 0 and "gateway" in r.stdout
    r = run_cli("gateway", "--help")
    assert r.returncode == 0 and "--predefined-topics" in r.stdout


@pytest.mark.integration
def test_gateway_process_bridges_to_mosquitto(mosquitto: Mosquitto, tmp_path: Path) -> None:
    topics = tmp_path / "predefined.conf"
    topics.write_text("# id map shared with the firmware\n*, cli/predef, 9\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*MESHOTA, "gateway", "--broker", mosquitto.url, "--udp", f"127.0.0.1:{port}",
         "--predefined-topics", str(topics), "--mode", "aggregating"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    got: list[tuple[str, bytes]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("cli/#", 1)
    sub.loop_start()
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"udp 127.0.0.1:{port}" in banner and "aggregating" in banner

        async def node() -> None:
            async with UdpClient(("127.0.0.1", port), "cli-node", predefined={"cli/predef": 9}) as c:
                await c.publish("cli/predef", b"via predefined id", qos=1)
                await c.publish("cli/named", b"via REGISTER", qos=1)

        asyncio.run(node())
        for _ in range(100):
            if len(got) >= 2:
                break
            asyncio.run(asyncio.sleep(0.05))
    finally:
        sub.loop_stop()
        sub.disconnect()
        proc.terminate()
        proc.wait(10)
    assert sorted(got) == [("cli/named", b"via REGISTER"), ("cli/predef", b"via predefined id")]
    assert proc.returncode == 0
