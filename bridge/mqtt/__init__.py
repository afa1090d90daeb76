"""MQTT adapter of the device API (the same routing table as HTTP) and the sealed-record bulk path,
on the MQTT 5 client of :mod:`bridge.mqtt5`.

See docs/topics.md for topics and envelopes, docs/mqtt_bridge.md for the trust model.
"""

from bridge.mqtt._adapter import BridgePolicy, MqttApiAdapter, Reply, StampedIdentity
from bridge.mqtt._bulk import SealedRecordService, load_record_keys
from bridge.mqtt._dedupe import ReplyCache
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
    "MqttApiAdapter",
    "MqttBridge",
    "MqttBridgeConfig",
    "Reply",
    "ReplyCache",
    "SealedRecordService",
    "StampedIdentity",
    "bridge_service",
    "load_record_keys",
    "stamped_identity_of",
]
