"""A gateway killed mid-delivery loses nothing the broker handed over (issue 14, part 3).

A real mosquitto and a real ``meshota gateway`` process. Two nodes subscribe, one at QoS 1 and one
at QoS 2; a message for each reaches them through the gateway, and they withhold their PUBACK /
PUBREC, so the gateway has the messages from the broker and the nodes have not acknowledged them.
The gateway is killed with SIGKILL and started again; the nodes reconnect (transparent mode:
CleanSession=0, the broker session per node holds the subscription; aggregating mode: a new
session that subscribes again) and get the messages, which they then acknowledge.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mqttsn import (
    Connack,
    Connect,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    ReturnCode,
    Suback,
    Subscribe,
    decode,
    encode,
)
from tests.support.broker import Mosquitto

MESHOTA = [sys.executable, "-m", "meshota"]


class Node:
    """A bare MQTT-SN client on a UDP socket: it answers only what the test tells it to."""

    def __init__(self, gateway: tuple[str, int], client_id: str) -> None:
        self.gateway = gateway
        self.client_id = client_id
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)

    def send(self, pkt: Packet) -> None:
        self.sock.sendto(encode(pkt), self.gateway)

    def recv(self) -> Packet:
        return decode(self.sock.recv(2048))

    def connect(self, clean: bool) -> None:
        self.send(Connect(self.client_id, 60, clean_session=clean))
        assert self.recv() == Connack(ReturnCode.ACCEPTED)

    def subscribe(self, topic: str, qos: int) -> None:
        self.send(Subscribe(1, topic, qos))
        ack = self.recv()
        assert isinstance(ack, Suback) and ack.return_code == ReturnCode.ACCEPTED and ack.qos == qos

    def next_publish(self) -> Publish:
        """The next PUBLISH, accepting a REGISTER for its topic first."""
        pkt = self.recv()
        if isinstance(pkt, Register):
            self.send(Regack(pkt.topic_id, pkt.msg_id))
            pkt = self.recv()
        assert isinstance(pkt, Publish), pkt
        return pkt

    def close(self) -> None:
        self.sock.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway_cmd(mosquitto: Mosquitto, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    yield [
        *MESHOTA, "gateway", "--broker", mosquitto.url, "--udp", f"127.0.0.1:{_free_udp_port()}",
        "--mode", request.param, "--retry-interval", "30", "--client-id", "gw-under-test",
    ]  # fmt: skip


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert "meshota gateway:" in banner, banner + (proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.mark.integration
@pytest.mark.parametrize("gateway_cmd", ["transparent", "aggregating"], indirect=True)
def test_sigkill_mid_delivery_then_restart_delivers(mosquitto: Mosquitto, gateway_cmd: list[str]) -> None:
    transparent = "transparent" in gateway_cmd
    port = int(gateway_cmd[gateway_cmd.index("--udp") + 1].rsplit(":", 1)[1])
    gw = _start(gateway_cmd)
    n1, n2 = Node(("127.0.0.1", port), "node-q1"), Node(("127.0.0.1", port), "node-q2")
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="app", protocol=mqtt.MQTTv5)
    try:
        n1.connect(clean=not transparent)
        n1.subscribe("dl/node-q1", 1)
        n2.connect(clean=not transparent)
        n2.subscribe("dl/node-q2", 2)
        publisher.connect(mosquitto.host, mosquitto.port)
        publisher.loop_start()
        publisher.publish("dl/node-q1", b"one", 1).wait_for_publish(10)
        publisher.publish("dl/node-q2", b"two", 2).wait_for_publish(10)
        # the gateway has both from the broker; the nodes withhold PUBACK / PUBREC
        first1, first2 = n1.next_publish(), n2.next_publish()
        assert (first1.data, first1.qos, first2.data, first2.qos) == (b"one", 1, b"two", 2)

        gw.send_signal(signal.SIGKILL)
        gw.wait(10)
        gw = _start(gateway_cmd)

        n1.connect(clean=not transparent)
        n2.connect(clean=not transparent)
        if not transparent:  # the new gateway knows no node: they subscribe again
            n1.subscribe("dl/node-q1", 1)
            n2.subscribe("dl/node-q2", 2)
        again1, again2 = n1.next_publish(), n2.next_publish()
        assert (again1.data, again1.qos, again2.data, again2.qos) == (b"one", 1, b"two", 2)
        n1.send(Puback(again1.topic_id, again1.msg_id))
        n2.send(Pubrec(again2.msg_id))
        assert n2.recv() == Pubrel(again2.msg_id)
        n2.send(Pubcomp(again2.msg_id))
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        n1.close()
        n2.close()
        gw.terminate()
        gw.wait(10)
    assert gw.returncode == 0
