"""The Mender device API as a node uses it, whatever carries it (HTTP or MQTT-SN).

:class:`DeviceApi` is the transport-neutral protocol the group drivers (``group_runners``) are
written against; :class:`~firmware_proto.aio.device_http.HttpDevice` (httpx) and
:class:`~firmware_proto.aio.device_mqttsn.MqttSnDevice` (MQTT-SN → gateway → broker → bridge)
implement it. Both end in the same server handlers, so a status code means the same on both.

Errors (the transport's own exceptions never leak out of an implementation)::

    DeviceApiError                 base: the call did not give a usable answer
    ├── DeviceApiTimeout           no answer in time (lost link, gateway or bridge down)
    ├── DeviceApiRefused           the server answered with a status the call cannot use
    │                              (``status``, ``body``: e.g. 401 not accepted, 416 bad range)
    └── DeviceApiTransportError    the transport itself failed (connection lost, topic refused)

Calls whose status is a normal outcome (``authenticate`` → 200/401, ``put_status`` → 204/409,
``mesh_report`` → 204/403/429) return the status instead of raising.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "AUTH_PATH",
    "CHUNK_MAP_PATH",
    "INVENTORY_PATH",
    "MESH_REPORT_CONTENT_TYPE",
    "MESH_REPORT_PATH",
    "NEXT_PATH",
    "DeviceApi",
    "DeviceApiError",
    "DeviceApiRefused",
    "DeviceApiTimeout",
    "DeviceApiTransportError",
    "log_path",
    "signed_auth_request",
    "status_path",
]

AUTH_PATH = "/api/devices/v1/authentication/auth_requests"
NEXT_PATH = "/api/devices/v1/deployments/device/deployments/next"
INVENTORY_PATH = "/api/devices/v1/inventory/device/attributes"
CHUNK_MAP_PATH = "/api/meshota/v1/devices/chunk_maps/{id}"
MESH_REPORT_PATH = "/api/meshota/v1/devices/mesh/report"  # a root's stream progress (wire/SPEC.md §7)
MESH_REPORT_CONTENT_TYPE = "application/vnd.meshota-mesh-report"


def status_path(deployment_id: str) -> str:
    return f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status"


def log_path(deployment_id: str) -> str:
    return f"/api/devices/v1/deployments/device/deployments/{deployment_id}/log"


class DeviceApiError(Exception):
    """A device-API call gave no usable answer."""


class DeviceApiTimeout(DeviceApiError):
    pass


class DeviceApiTransportError(DeviceApiError):
    pass


class DeviceApiRefused(DeviceApiError):
    def __init__(self, what: str, status: int, body: bytes = b"") -> None:
        super().__init__(f"{what} answered {status}: {body[:200]!r}")
        self.status = status
        self.body = body


def signed_auth_request(
    key: ec.EllipticCurvePrivateKey, mac: str, tenant_token: str = ""
) -> tuple[bytes, str]:
    """(body, X-MEN-Signature) of a Mender auth request, exactly as the mender-client signs it."""
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    id_data = json.dumps({"mac": mac}, separators=(",", ":"))
    body = (
        json.dumps({"id_data": id_data, "tenant_token": tenant_token, "pubkey": pub.decode()}) + "\n"
    ).encode()
    return body, base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


class DeviceApi(Protocol):
    """One device's session with the Mender device API (see the module docstring for errors)."""

    mac: str
    token: str

    async def authenticate(self) -> int:
        """Signed auth request; 200 stores the token, 401 = not accepted (yet)."""
        ...

    async def put_inventory(self, attributes: Sequence[Mapping[str, Any]]) -> int: ...

    async def patch_inventory(self, attributes: Sequence[Mapping[str, Any]]) -> int: ...

    async def next_deployment(self, artifact_name: str, device_type: str) -> dict[str, Any] | None:
        """The deployment for this device (Mender's JSON), or None (204)."""
        ...

    async def put_status(self, deployment_id: str, status: str, substate: str | None = None) -> int:
        """``substate``: e.g. "awaiting window" with ``pause_before_installing``."""
        ...

    async def put_log(self, deployment_id: str, messages: Sequence[Mapping[str, str]]) -> int: ...

    async def fetch_range(self, uri: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the artifact behind a download link (may be shorter
        than ``length`` when the transport's block size is smaller: callers continue from there)."""
        ...

    async def fetch_map(self, artifact_id: str, chunk_size: int) -> bytes: ...

    async def fetch_artifact(self, uri: str) -> bytes:
        """The whole artifact, block-wise (ranged requests, resumable)."""
        ...

    async def mesh_report(self, record: bytes) -> int:
        """A root's stream progress report (the record of wire/mesh_report.py): 204 stored."""
        ...

    def mesh_report_room(self) -> int:
        """The largest report record one call carries (MQTT-SN: what fits in one datagram)."""
        ...

    async def aclose(self) -> None: ...
