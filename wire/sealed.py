"""Sealed records: small device-API calls a root may batch but cannot read, forge or replay.

Shared by the node (seal requests, open replies) and the bridge (open requests, seal replies).
Sans-I/O: bytes in, bytes out; the only primitive is a vetted AEAD (AES-CCM, 8-byte tag, from
``cryptography``), keys come from HKDF-SHA256. Nothing here is hand-written cryptography.

Why not OSCORE (RFC 8613)? OSCORE protects CoAP messages; our records ride MQTT-SN, so OSCORE
would drag a CoAP header and option encoding along for nothing. We keep OSCORE's shape — a
per-sender key derived from a master secret, a sender sequence number as partial IV, the nonce
built from (direction, key id, sequence), AES-CCM with a 64-bit tag, a sliding replay window on
the receiver — and drop the CoAP framing. Wire format of one record::

    kid (3 bytes) || seq (unsigned LEB128, 1..9 bytes) || AES-CCM-8 ciphertext || tag (8 bytes)

    key    = HKDF-SHA256(ikm=device PSK, salt="meshota-sealed-v1", info=device id, 16 bytes)
    kid    = HKDF-SHA256(ikm=device PSK, salt="meshota-sealed-v1", info="kid|" + device id, 3 bytes)
    nonce  = direction (1: 0 node->server, 1 server->node) || kid (3) || 0 (1) || seq (8, big endian)
    aad    = "meshota-sealed-v1" (implicit, never sent)

A reply is sealed with the same key, direction 1 and the request's seq, so each (key, nonce)
pair is used once. Overhead: 3 + len(seq) + 8 bytes = 12..14 for seq < 2^21, plus 2 bytes of
msgpack framing in a batch (``bin8`` header) = 14..16 per record. The kid is a hint, not a
secret: with 3 bytes two devices may share one; the opener tries each key with that kid and the
AEAD decides (a wrong key fails with probability 1 - 2^-64).

Plaintext of a request: msgpack ``[op, arg, body]`` (see :class:`RecordOp`); of a reply:
msgpack ``[status, body bytes]``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wire.errors import WireError

__all__ = [
    "KID_LEN",
    "MAX_SEQ",
    "TAG_LEN",
    "TO_NODE",
    "TO_SERVER",
    "RecordKey",
    "RecordOp",
    "ReplayWindow",
    "SealedRecordError",
    "decode_reply",
    "decode_request",
    "decode_varint",
    "derive_record_key",
    "encode_reply",
    "encode_request",
    "encode_varint",
    "open_record",
    "parse_header",
    "seal_record",
]

KID_LEN = 3
TAG_LEN = 8
_SALT = b"meshota-sealed-v1"
_AAD = b"meshota-sealed-v1"
TO_SERVER = 0
TO_NODE = 1
MAX_SEQ = (1 << 56) - 1


class SealedRecordError(WireError):
    """A record that cannot be parsed, opened or accepted (the peer's bytes are bad)."""


class RecordOp(enum.IntEnum):
    """What a sealed request asks for: each maps to one route of the device API."""

    INVENTORY_PATCH = 1  # body: list of {"name", "value"} -> PATCH inventory/device/attributes
    INVENTORY_PUT = 2  # body: list of attributes -> PUT inventory/device/attributes
    NEXT = 3  # body: {"device_provides": {...}} -> POST v2 deployments/next
    STATUS = 4  # arg: deployment id, body: {"status": ...} -> PUT .../{id}/status
    COUNT = 5  # body: a count record (wire/countme.py, bytes) -> POST meshota fleet_counts


@dataclass(frozen=True, slots=True)
class RecordKey:
    device_id: str
    kid: bytes
    key: bytes

    def aead(self) -> AESCCM:
        return _aead(self.key)


@functools.lru_cache(maxsize=4096)
def _aead(key: bytes) -> AESCCM:
    """AES-CCM-8 contexts are immutable; one per key saves its setup on every record."""
    return AESCCM(key, tag_length=TAG_LEN)


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(secret)


def derive_record_key(device_id: str, secret: bytes) -> RecordKey:
    """The per-device record key from the device's provisioned secret (its DTLS PSK)."""
    if not secret:
        raise ValueError("empty device secret")
    info = device_id.encode()
    return RecordKey(device_id, _hkdf(secret, b"kid|" + info, KID_LEN), _hkdf(secret, info, 16))


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, offset: int) -> tuple[int, int]:
    """(value, next offset); at most 9 bytes (63 bits)."""
    value = shift = 0
    for i in range(offset, min(len(data), offset + 9)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise SealedRecordError("truncated or overlong sequence number")


def _nonce(direction: int, kid: bytes, seq: int) -> bytes:
    return bytes((direction,)) + kid + b"\x00" + seq.to_bytes(8, "big")


def seal_record(key: RecordKey, seq: int, plaintext: bytes, *, direction: int = TO_SERVER) -> bytes:
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {seq} out of range")
    sealed = key.aead().encrypt(_nonce(direction, key.kid, seq), plaintext, _AAD)
    return key.kid + encode_varint(seq) + sealed


def parse_header(record: bytes) -> tuple[bytes, int, int]:
    """(kid, seq, offset of the ciphertext) without any key."""
    if len(record) < KID_LEN + 1 + TAG_LEN:
        raise SealedRecordError(f"record too short ({len(record)} bytes)")
    seq, offset = decode_varint(record, KID_LEN)
    if len(record) - offset < TAG_LEN:
        raise SealedRecordError("record too short for its tag")
    return record[:KID_LEN], seq, offset


def open_record(
    candidates: Sequence[RecordKey], record: bytes, *, direction: int = TO_SERVER
) -> tuple[RecordKey, int, bytes]:
    """Open ``record`` with whichever candidate key it was sealed with: (key, seq, plaintext)."""
    kid, seq, offset = parse_header(record)
    for key in candidates:
        if key.kid != kid:
            continue
        try:
            plain = key.aead().decrypt(_nonce(direction, kid, seq), record[offset:], _AAD)
        except InvalidTag:
            continue
        return key, seq, plain
    raise SealedRecordError("record does not open with any known key (forged, altered or unknown)")


def encode_request(op: RecordOp, arg: str, body: object) -> bytes:
    return bytes(msgpack.packb([int(op), arg, body], use_bin_type=True))


def decode_request(plain: bytes) -> tuple[RecordOp, str, object]:
    try:
        op, arg, body = msgpack.unpackb(plain, raw=False)
        return RecordOp(op), str(arg), body
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SealedRecordError(f"malformed record plaintext: {exc}") from None


def encode_reply(status: int, body: bytes) -> bytes:
    return bytes(msgpack.packb([status, body], use_bin_type=True))


def decode_reply(plain: bytes) -> tuple[int, bytes]:
    try:
        status, body = msgpack.unpackb(plain, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SealedRecordError(f"malformed reply plaintext: {exc}") from None
    if not isinstance(status, int) or not isinstance(body, bytes):
        raise SealedRecordError("malformed reply plaintext")
    return status, body


class ReplayWindow:
    """Sliding anti-replay window over sender sequence numbers (RFC 6479 / DTLS shape).

    ``highest`` is the largest sequence accepted; bit i of ``bitmap`` says ``highest - i`` was seen.
    State is two integers so a server can persist it (see bridge.mqtt).
    """

    __slots__ = ("bitmap", "highest", "size")

    def __init__(self, highest: int = -1, bitmap: int = 0, size: int = 64) -> None:
        self.highest = highest
        self.bitmap = bitmap
        self.size = size

    def check(self, seq: int) -> bool:
        """True if ``seq`` is new (not seen, not older than the window)."""
        if seq > self.highest:
            return True
        age = self.highest - seq
        return age < self.size and not (self.bitmap >> age) & 1

    def accept(self, seq: int) -> None:
        if not self.check(seq):
            raise SealedRecordError(f"replayed or too old sequence number {seq}")
        if seq > self.highest:
            shift = seq - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = seq
        else:
            self.bitmap |= 1 << (self.highest - seq)

    def dumps(self) -> str:
        return f"{self.highest}:{self.bitmap:x}"

    @classmethod
    def loads(cls, text: str, size: int = 64) -> ReplayWindow:
        high, _, bits = text.partition(":")
        return cls(int(high), int(bits or "0", 16), size)
