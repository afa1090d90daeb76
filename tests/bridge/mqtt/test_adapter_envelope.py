"""The MQTT adapter answers a bad envelope on the id the decoder read, and drops one without an id."""

from __future__ import annotations

import asyncio

import msgpack

from bridge.api import Router
from bridge.mqtt import BridgePolicy, MqttApiAdapter, Reply, StampedIdentity
from wire.envelope import ResponseEnvelope, response_topic

WHO = StampedIdentity("node-1", verified=True)
TOPIC = "/mender/api/devices/v1/inventory/device/attributes"


def _handle(payload: bytes) -> Reply | None:
    adapter = MqttApiAdapter(Router(None, []), BridgePolicy())
    return asyncio.run(adapter.handle(TOPIC, payload, WHO))


def test_bad_envelope_with_a_readable_id_gets_400_on_its_response_topic() -> None:
    reply = _handle(msgpack.packb({"i": "r7", "m": "FETCH"}))
    assert reply is not None
    assert reply.status == 400 and reply.request_id == "r7"
    assert reply.topic == response_topic("node-1", "r7")
    body = ResponseEnvelope.decode(reply.payload)
    assert body.status == 400 and b"bad request envelope" in body.body


def test_bad_envelope_without_an_id_is_dropped() -> None:
    assert _handle(b"\xc1") is None
    assert _handle(msgpack.packb({"i": "a/b", "m": "GET"})) is None
