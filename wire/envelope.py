"""The device API over MQTT(-SN): topics and msgpack envelopes, shared by nodes and the bridge.

docs/topics.md is the prose version of this module. Every decoder raises :class:`EnvelopeError`
on bad bytes, never anything else; once the request id has been read, the error carries it.

Request, published on ``/mender`` + API path (e.g. ``/mender/api/devices/v1/inventory/device/attributes``)::

    {"i": request id, "m": method, "t": token?, "c": content type?, "b": body?, "q": query?, "h": headers?,
     "n": serial?}

``n`` (optional, unsigned int) is the node's request serial: a node that cycles a small set of
request ids (the gateway's per-session topic table is bounded) sends a new serial with every new
request, so an identical request on a reused id within the dedupe TTL is still a new request.

Response, on ``/mender/responses/{device id}/{request id}``::

    {"s": status, "h": {lower-case name: value}, "b": body}

Bulk request (a root's batch of sealed records), on ``/mender/bulk/v1``::

    {"i": batch id, "r": [sealed record, ...]}

Bulk reply, on ``/mender/responses/{root device id}/{batch id}``::

    {"s": 200, "r": [sealed reply | error code, ...]}   (same order as the records)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from wire.errors import WireError

__all__ = [
    "API_TOPIC_PREFIX",
    "BULK_TOPIC",
    "DEVICE_PROPERTY",
    "MAX_REQUEST_ID",
    "RESPONSE_TOPIC_PREFIX",
    "VERIFIED_PROPERTY",
    "BulkError",
    "BulkReply",
    "BulkRequest",
    "EnvelopeError",
    "RequestEnvelope",
    "ResponseEnvelope",
    "api_path_of",
    "check_request_id",
    "request_topic",
    "response_topic",
]

API_TOPIC_PREFIX = "/mender/api/"
RESPONSE_TOPIC_PREFIX = "/mender/responses/"
BULK_TOPIC = "/mender/bulk/v1"
# MQTT 5 user properties the gateway stamps on every PUBLISH it forwards
DEVICE_PROPERTY = "meshota-device"
VERIFIED_PROPERTY = "meshota-verified"  # "1": DTLS-verified identity, "0": MQTT-SN client id only
MAX_REQUEST_ID = 64
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})


class EnvelopeError(WireError):
    """Bytes that are not a valid envelope (the peer's fault).

    ``request_id`` is the envelope's request (or batch) id when it could be read before the
    error, so the reply can still go to the sender's response topic without a second decode.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class BulkError:
    """Error codes in a bulk reply, in place of a sealed reply (the root learns only these)."""

    UNOPENABLE = 1  # no key opens it: forged, altered by the root, or unknown device
    REPLAYED = 2  # sequence number already seen or too old
    MALFORMED = 3  # opened, but the plaintext is not a record
    NOT_BOUND = 4  # the device never authenticated over its own verified session


def check_request_id(rid: object) -> str:
    if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID:
        raise EnvelopeError(f"request id must be a string of 1..{MAX_REQUEST_ID} characters")
    if any(c in rid for c in "/+#\x00") or rid.startswith("$"):
        raise EnvelopeError("request id must be one topic level without wildcards")
    return rid


def request_topic(api_path: str) -> str:
    return "/mender" + api_path


def api_path_of(topic: str) -> str | None:
    return topic[len("/mender") :] if topic.startswith(API_TOPIC_PREFIX) else None


def response_topic(device_id: str, request_id: str) -> str:
    return f"{RESPONSE_TOPIC_PREFIX}{device_id}/{request_id}"


def _unpack_map(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise EnvelopeError(f"{what} is not msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError(f"{what} must be a msgpack map")
    return obj


def _str_map(obj: object, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise EnvelopeError(f"{what} must map strings to strings")
    return dict(obj)


@dataclass(frozen=True, slots=True)
class RequestEnvelope:
    request_id: str
    method: str
    token: str | None = None
    content_type: str | None = None
    body: bytes = b""
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. range, x-men-signature
    serial: int | None = None  # makes a reused request id a new request (see the module docstring)

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"i": self.request_id, "m": self.method}
        if self.token:
            obj["t"] = self.token
        if self.content_type:
            obj["c"] = self.content_type
        if self.body:
            obj["b"] = self.body
        if self.query:
            obj["q"] = {k: v[0] if len(v) == 1 else list(v) for k, v in self.query.items()}
        if self.headers:
            obj["h"] = dict(self.headers)
        if self.serial is not None:
            obj["n"] = self.serial
        return bytes(msgpack.packb(obj, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes) -> RequestEnvelope:
        obj = _unpack_map(data, "request envelope")
        rid = check_request_id(obj.get("i"))
        try:
            return cls._decode_fields(rid, obj)
        except EnvelopeError as exc:
            exc.request_id = rid
            raise

    @classmethod
    def _decode_fields(cls, rid: str, obj: dict[str, Any]) -> RequestEnvelope:
        method = obj.get("m")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise EnvelopeError(f"bad method {method!r}")
        token, ctype, body = obj.get("t"), obj.get("c"), obj.get("b", b"")
        if token is not None and not isinstance(token, str):
            raise EnvelopeError("token must be a string")
        if ctype is not None and not isinstance(ctype, str):
            raise EnvelopeError("content type must be a string")
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            raise EnvelopeError("body must be bytes")
        query: dict[str, list[str]] = {}
        raw_query = obj.get("q") or {}
        if not isinstance(raw_query, dict):
            raise EnvelopeError("query must be a map")
        for k, v in raw_query.items():
            values = v if isinstance(v, list) else [v]
            if not isinstance(k, str) or not all(isinstance(x, str) for x in values):
                raise EnvelopeError("query must map strings to strings or lists of strings")
            query[k] = list(values)
        headers = {k.lower(): v for k, v in _str_map(obj.get("h"), "headers").items()}
        serial = obj.get("n")
        if serial is not None and (not isinstance(serial, int) or isinstance(serial, bool) or serial < 0):
            raise EnvelopeError("serial must be an unsigned integer")
        return cls(rid, method.upper(), token, ctype, body, query, headers, serial)


@dataclass(frozen=True, slots=True)
class ResponseEnvelope:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb({"s": self.status, "h": dict(self.headers), "b": self.body}, use_bin_type=True)
        )

    @classmethod
    def decode(cls, data: bytes) -> ResponseEnvelope:
        obj = _unpack_map(data, "response envelope")
        status, body = obj.get("s"), obj.get("b", b"")
        if not isinstance(status, int) or not isinstance(body, bytes):
            raise EnvelopeError("response needs an integer status and a bytes body")
        return cls(status, _str_map(obj.get("h"), "headers"), body)


@dataclass(frozen=True, slots=True)
class BulkRequest:
    batch_id: str
    records: Sequence[bytes]

    def encode(self) -> bytes:
        return bytes(msgpack.packb({"i": self.batch_id, "r": list(self.records)}, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes, *, max_records: int = 1000) -> BulkRequest:
        obj = _unpack_map(data, "bulk request")
        rid = check_request_id(obj.get("i"))
        records = obj.get("r")
        if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
            raise EnvelopeError("bulk records must be a list of byte strings", request_id=rid)
        if len(records) > max_records:
            raise EnvelopeError(
                f"bulk request holds {len(records)} records (at most {max_records})", request_id=rid
            )
        return cls(rid, records)


@dataclass(frozen=True, slots=True)
class BulkReply:
    status: int
    entries: Sequence[bytes | int]

    def encode(self) -> bytes:
        return bytes(msgpack.packb({"s": self.status, "r": list(self.entries)}, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes) -> BulkReply:
        obj = _unpack_map(data, "bulk reply")
        status, entries = obj.get("s"), obj.get("r", [])
        if not isinstance(status, int) or not isinstance(entries, list):
            raise EnvelopeError("bulk reply needs a status and a list")
        if not all(isinstance(e, (bytes, int)) for e in entries):
            raise EnvelopeError("bulk reply entries are bytes or error codes")
        return cls(status, entries)
