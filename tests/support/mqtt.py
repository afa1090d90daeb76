"""Helpers for the MQTT bridge tests: a server with the bridge in its loop, and a stamping caller.

``StampingCaller`` plays the gateway's part: a paho MQTT 5 client that publishes device-API
requests with the ``meshota-device`` / ``meshota-verified`` user properties and waits for the
reply on ``/mender/responses/<device>/<request id>``.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.api import Settings
from bridge.http import BackgroundServer, ServerConfig
from bridge.mqtt import BridgePolicy, MqttBridgeConfig, bridge_service
from wire.envelope import (
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
    RequestEnvelope,
    ResponseEnvelope,
    request_topic,
)
from wire.sealed import RecordKey

PUBLIC_URL = "http://bridge.example"


def start_bridge_server(
    db_url: str,
    tmp: Path,
    broker_port: int,
    *,
    schema: str | None = None,
    policy: BridgePolicy | None = None,
    record_keys: dict[str, RecordKey] | None = None,
    client_id: str = "meshota-bridge",
    share_group: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> BackgroundServer:
    config = MqttBridgeConfig(
        "127.0.0.1",
        broker_port,
        client_id=client_id,
        policy=policy or BridgePolicy(require_verified=True, block_size=256),
        share_group=share_group,
        username=username,
        password=password,
    )
    server_config = ServerConfig(
        db_url=db_url,
        artifacts_dir=tmp / "artifacts",
        port=0,
        db_schema=schema,
        settings=Settings(public_url=PUBLIC_URL),
        services=(bridge_service(config, record_keys),),
    )
    return BackgroundServer(server_config).start()


@dataclass
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    payloads: list[bytes] = field(default_factory=list)


class StampingCaller:
    """A gateway-like MQTT 5 client: publishes stamped requests, collects replies (thread-safe)."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        subscribe: str = "/mender/responses/#",
        persistent: bool = False,
    ) -> None:
        connect_props = Properties(PacketTypes.CONNECT)
        if persistent:  # the broker keeps our subscription and queued replies across a restart
            connect_props.SessionExpiryInterval = 3600
        clean_start = not persistent
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"caller-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        if username:
            self.client.username_pw_set(username, password)
        self._lock = threading.Lock()
        self._waiters: dict[str, _Waiter] = {}
        self.received: list[tuple[str, bytes]] = []
        self.answered_by: dict[str, int] = {}  # meshota-bridge property -> replies
        self.suback: list[int] = []
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, clean_start=clean_start, properties=connect_props)
        self.client.loop_start()
        self.client.subscribe(subscribe, qos=1)
        assert self._subscribed.wait(10), "no SUBACK"
        self._ids = itertools.count(1)

    def _on_subscribe(
        self, client: object, userdata: object, mid: int, rcs: list[object], props: object
    ) -> None:
        self.suback = [int(getattr(rc, "value", rc)) for rc in rcs]  # type: ignore[call-overload]
        self._subscribed.set()

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        bridge = dict(getattr(msg.properties, "UserProperty", []) or []).get("meshota-bridge", "")
        with self._lock:
            self.received.append((msg.topic, msg.payload))
            self.answered_by[bridge] = self.answered_by.get(bridge, 0) + 1
            waiter = self._waiters.setdefault(msg.topic, _Waiter())
            waiter.payloads.append(msg.payload)
            waiter.event.set()

    def publish(
        self, topic: str, payload: bytes, device: str | None, verified: bool = True, qos: int = 1
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)
        if device is not None:
            props.UserProperty = [(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1" if verified else "0")]
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        info.wait_for_publish(10)

    def wait(self, topic: str, timeout: float = 15.0) -> bytes:
        with self._lock:
            waiter = self._waiters.setdefault(topic, _Waiter())
        assert waiter.event.wait(timeout), f"no reply on {topic}"
        return waiter.payloads[0]

    def copies(self, topic: str) -> int:
        with self._lock:
            return len(self._waiters.get(topic, _Waiter()).payloads)

    def call(
        self,
        device: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, list[str]] | None = None,
        verified: bool = True,
        request_id: str | None = None,
    ) -> ResponseEnvelope:
        rid = request_id or f"r{next(self._ids)}-{uuid.uuid4().hex[:6]}"
        env = RequestEnvelope(
            rid, method, token, "application/json" if body else None, body, query or {}, headers or {}
        )
        self.publish(request_topic(path), env.encode(), device, verified)
        return ResponseEnvelope.decode(self.wait(f"/mender/responses/{device}/{rid}"))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
