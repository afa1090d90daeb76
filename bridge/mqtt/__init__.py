"""MQTT adapter of the device API (the same routing table as HTTP), the sealed-record bulk path, and
the bridge's own MQTT 5 client (sans-I/O session + asyncio driver).

See docs/topics.md for topics and envelopes, docs/mqtt_bridge.md for the trust model.
"""

from bridge.mqtt._adapter import BridgePolicy, MqttApiAdapter, Reply, StampedIdentity
from bridge.mqtt._bulk import SealedRecordService, load_record_keys
from bridge.mqtt._dedupe import ReplyCache
from bridge.mqtt._mqtt5_client import Mqtt5Client
from bridge.mqtt._mqtt5_session import (
    ConnAck,
    ConnectOptions,
    Mqtt5ConnectError,
    Mqtt5Error,
    Mqtt5ProtocolError,
    Mqtt5Session,
    PingResp,
    PubAck,
    PublishIn,
    ServerDisconnect,
    SubAck,
    encode_user_properties,
)
from bridge.mqtt._service import (
    BridgeStats,
    MqttBridge,
    MqttBridgeConfig,
    bridge_service,
    stamped_identity_of,
)

__all__ = [
    "BridgePolicy",
    "BridgeStats",
    "ConnAck",
    "ConnectOptions",
    "Mqtt5Client",
    "Mqtt5ConnectError",
    "Mqtt5Error",
    "Mqtt5ProtocolError",
    "Mqtt5Session",
    "MqttApiAdapter",
    "MqttBridge",
    "MqttBridgeConfig",
    "PingResp",
    "PubAck",
    "PublishIn",
    "Reply",
    "ReplyCache",
    "SealedRecordService",
    "ServerDisconnect",
    "StampedIdentity",
    "SubAck",
    "bridge_service",
    "encode_user_properties",
    "load_record_keys",
    "stamped_identity_of",
]
