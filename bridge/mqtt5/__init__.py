"""MQTT 5 client shared by the MQTT bridge (bridge.mqtt) and the gateway's broker link
(bridge.gateway.broker_link): a sans-I/O session (codec, QoS 0/1/2 both ways, deferred
acknowledgements, persistent sessions) and its asyncio driver. Imports nothing else of ours.
"""

from bridge.mqtt5._client import Mqtt5Client
from bridge.mqtt5._codec import (
    ConnAck,
    Mqtt5ConnectError,
    Mqtt5Error,
    Mqtt5ProtocolError,
    PingResp,
    PubAck,
    PublishIn,
    ServerDisconnect,
    SubAck,
    UnsubAck,
    encode_user_properties,
)
from bridge.mqtt5._session import ConnectOptions, Mqtt5Session, Will

__all__ = [
    "ConnAck",
    "ConnectOptions",
    "Mqtt5Client",
    "Mqtt5ConnectError",
    "Mqtt5Error",
    "Mqtt5ProtocolError",
    "Mqtt5Session",
    "PingResp",
    "PubAck",
    "PublishIn",
    "ServerDisconnect",
    "SubAck",
    "UnsubAck",
    "Will",
    "encode_user_properties",
]
