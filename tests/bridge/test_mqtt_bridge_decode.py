"""The bridge's lean MQTT 5 PUBLISH decoder: same result as paho's, and paho's path for the rest."""

from __future__ import annotations

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mqtt_bridge._service import (
    PublishDecodeError,
    StampedIdentity,
    decode_publish,
    stamped_identity_of,
)


def _body(topic: str, mid: int, props: Properties | None, payload: bytes) -> bytes:
    raw = topic.encode()
    packed = props.pack() if props is not None else b"\x00"  # type: ignore[no-untyped-call]
    return len(raw).to_bytes(2, "big") + raw + (mid.to_bytes(2, "big") if mid else b"") + packed + payload


def _props(**values: object) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize(
    "props",
    [
        None,
        {"UserProperty": [("meshota-device", "node-1"), ("meshota-verified", "1")]},
        {
            "UserProperty": [("a", "é"), ("meshota-device", "node-2")],
            "ContentType": "application/msgpack",
            "CorrelationData": b"\x00\x01",
            "ResponseTopic": "/x/y",
            "PayloadFormatIndicator": 0,
            "MessageExpiryInterval": 60,
        },
    ],
)
def test_decodes_like_paho(qos: int, props: dict[str, object] | None) -> None:
    properties = _props(**props) if props is not None else None
    body = _body("/mender/api/devices/v1/x", 7 if qos else 0, properties, b"\x81\xa1i\xa2r1")
    topic, mid, pairs, payload = decode_publish(body, qos)
    ref = _packet.decode_publish(0x30 | qos << 1, body, MQTTProtocolVersion.MQTTv5)
    assert topic == ref.topic.decode()
    assert mid == ref.mid
    assert payload == ref.payload
    assert pairs == (getattr(ref.properties, "UserProperty", None) or [])


@pytest.mark.parametrize(
    ("body", "qos"),
    [
        (_body("/t", 1, None, b"x"), 2),  # QoS 2: paho's path
        (_body("/t", 0, _props(TopicAlias=3), b"x"), 0),  # topic alias
        (_body("/t", 0, _props(SubscriptionIdentifier=[5]), b"x"), 0),  # subscription identifier
        (_body("", 0, None, b"x"), 0),  # empty topic (alias form)
        (_body("/t", 0, None, b"")[:3], 0),  # truncated topic
        (b"\x00\x02\xff\xfe\x00", 0),  # topic not UTF-8
        (_body("/t", 0, None, b"")[:4] + b"\x00", 1),  # QoS 1 without a packet id
        (b"\x00\x02/t\x05\x26\x00\x01a", 0),  # property length beyond the packet
        (b"\x00\x02/t\x03\x26\x00\x01a\x00\x01b", 0),  # a user property overrunning its length
        (b"\x00\x02/t\xff\xff\xff\xff\x01", 0),  # property length varint too long
    ],
)
def test_leaves_unusual_or_malformed_to_paho(body: bytes, qos: int) -> None:
    with pytest.raises(PublishDecodeError):
        decode_publish(body, qos)


def test_stamp_from_pairs() -> None:
    assert stamped_identity_of([("meshota-device", "n1"), ("meshota-verified", "1")]) == StampedIdentity(
        "n1", True
    )
    assert stamped_identity_of([("meshota-device", "n1")]) == StampedIdentity("n1", False)
    assert stamped_identity_of([("meshota-device", "n1"), ("meshota-device", "n2")]) is None
    assert stamped_identity_of([("meshota-device", "n/1")]) is None
    assert stamped_identity_of([]) is None
