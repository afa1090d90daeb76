"""Mender's deviceconnect message: ``ProtoMsg`` (go-lib-micro ``ws``), msgpack, sans-I/O.

One websocket binary message is one msgpack map ``{"hdr": {"proto": int, "typ": str, "sid": str,
"props": {...}}, "body": bytes}`` (``typ``, ``sid``, ``props`` and ``body`` may be absent).
``proto``: 1 shell, 2 file transfer, 3 port forward, 4 mender-client, 0xFFFF session control
(``ping``, ``pong``, ``open``, ``accept``, ``close``, ``error``). The relay reads the header only:
bodies pass through untouched, except the server's own control messages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ._types import ApiError

__all__ = [
    "PROTO_CONTROL",
    "PROTO_FILETRANSFER",
    "PROTO_MENDERCLIENT",
    "PROTO_NAMES",
    "PROTO_PORTFORWARD",
    "PROTO_SHELL",
    "ProtoMsg",
    "decode_msg",
    "encode_msg",
    "restamp",
]

PROTO_SHELL = 1
PROTO_FILETRANSFER = 2
PROTO_PORTFORWARD = 3
PROTO_MENDERCLIENT = 4
PROTO_CONTROL = 0xFFFF
PROTO_NAMES = {
    PROTO_SHELL: "shell",
    PROTO_FILETRANSFER: "filetransfer",
    PROTO_PORTFORWARD: "portforward",
    PROTO_MENDERCLIENT: "menderclient",
    PROTO_CONTROL: "control",
}
_MAX_TEXT = 256  # typ and sid
_MAX_PROPS = 32


@dataclass(frozen=True, slots=True)
class ProtoMsg:
    proto: int
    typ: str = ""
    sid: str = ""
    props: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""


def encode_msg(msg: ProtoMsg) -> bytes:
    """The message as a Go peer marshals it: absent fields omitted, integer ``props`` values as
    int64 (``0xd3``), which mender-connect's file transfer insists on for ``offset``."""
    hdr = [_pack("proto") + _pack(msg.proto)]
    if msg.typ:
        hdr.append(_pack("typ") + _pack(msg.typ))
    if msg.sid:
        hdr.append(_pack("sid") + _pack(msg.sid))
    if msg.props:
        props = [_pack(k) + _pack_value(v) for k, v in msg.props.items()]
        hdr.append(_pack("props") + _map_header(len(props)) + b"".join(props))
    top = [_pack("hdr") + _map_header(len(hdr)) + b"".join(hdr)]
    if msg.body:
        top.append(_pack("body") + _pack(msg.body))
    return _map_header(len(top)) + b"".join(top)


def _pack_value(value: object) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return b"\xd3" + struct.pack(">q", value)
    return _pack(value)


def decode_msg(data: bytes, max_size: int) -> ProtoMsg:
    """The message in ``data``; a typed 400 ``ApiError`` for anything that is not one."""
    if len(data) > max_size:
        raise ApiError(413, f"message exceeds {max_size} bytes")
    try:
        doc = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=_MAX_PROPS,
            max_map_len=_MAX_PROPS,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ApiError(400, f"not a msgpack ProtoMsg: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hdr"), dict):
        raise ApiError(400, "ProtoMsg needs a hdr map")
    hdr = doc["hdr"]
    proto = hdr.get("proto")
    if not isinstance(proto, int) or isinstance(proto, bool) or not 0 < proto <= 0xFFFF:
        raise ApiError(400, "hdr.proto must be an integer in 1..65535")
    typ, sid = hdr.get("typ", ""), hdr.get("sid", "")
    if not isinstance(typ, str) or not isinstance(sid, str) or len(typ) > _MAX_TEXT or len(sid) > _MAX_TEXT:
        raise ApiError(400, f"hdr.typ and hdr.sid must be strings of at most {_MAX_TEXT} characters")
    props = hdr.get("props") or {}
    if not isinstance(props, dict):
        raise ApiError(400, "hdr.props must be a map")
    body = doc.get("body") or b""
    if not isinstance(body, bytes):
        raise ApiError(400, "body must be binary")
    return ProtoMsg(proto, typ, sid, props, body)


def restamp(data: bytes, sid: str, stamps: dict[str, str]) -> bytes:
    """``data`` (a message :func:`decode_msg` accepted) with ``hdr.sid`` set to ``sid`` and the
    ``stamps`` put into ``hdr.props``; every other byte as the sender encoded it.

    Splicing, not re-encoding: Go peers decode ``props`` values into ``interface{}`` and check
    their msgpack width (mender-connect wants ``offset`` as an int64, 0xd3), which a decode and
    re-encode in Python would not keep.
    """
    doc = msgpack.unpackb(data, raw=False)
    props_is_map = isinstance(doc["hdr"].get("props"), dict)
    u = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(len(data), 1))
    u.feed(data)
    top: list[bytes] = []
    for _ in range(u.read_map_header()):
        start = u.tell()
        key = u.unpack()
        if key != "hdr":
            u.skip()
            top.append(data[start : u.tell()])
            continue
        hdr: list[bytes] = []
        props: list[bytes] = []
        for _ in range(u.read_map_header()):
            a = u.tell()
            hkey = u.unpack()
            if hkey == "props" and props_is_map:
                for _ in range(u.read_map_header()):
                    b = u.tell()
                    pkey = u.unpack()
                    u.skip()
                    if pkey not in stamps:
                        props.append(data[b : u.tell()])
                continue
            u.skip()
            if hkey not in ("sid", "props"):
                hdr.append(data[a : u.tell()])
        props += [_pack(k) + _pack(v) for k, v in stamps.items()]
        hdr.append(_pack("sid") + _pack(sid))
        hdr.append(_pack("props") + _map_header(len(props)) + b"".join(props))
        top.append(_pack("hdr") + _map_header(len(hdr)) + b"".join(hdr))
    return _map_header(len(top)) + b"".join(top)


def _pack(value: object) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def _map_header(n: int) -> bytes:
    return bytes(msgpack.Packer().pack_map_header(n))
