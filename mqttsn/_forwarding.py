"""Forwarder encapsulation (v1.2 §5.5) on the gateway side: who a datagram really came from.

A plain UDP driver calls :func:`unwrap` on every datagram and :func:`wrap` on every reply, so the
gateway core keys sessions on :class:`ForwardedPeer` for relayed nodes and never sees 0xFE.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ._codec import encode
from ._errors import DecodeError
from ._packets import Encapsulated, MsgType

__all__ = ["ForwardedPeer", "is_encapsulated", "unwrap", "wrap"]


@dataclass(frozen=True, slots=True)
class ForwardedPeer:
    """A node behind a forwarder: the forwarder's address plus the wireless node id."""

    relay: Hashable
    node_id: bytes


def is_encapsulated(data: bytes) -> bool:
    """Forwarder encapsulation, told apart from a DTLS record (also 0xFE at byte 1) by byte 2:
    the Ctrl octet has its reserved bits 7-2 clear, a DTLS version byte is 0xFD/0xFF."""
    return len(data) >= 3 and data[0] >= 3 and data[1] == MsgType.ENCAPSULATED and not data[2] & 0xFC


def unwrap(data: bytes, addr: Hashable) -> tuple[Hashable, bytes]:
    """Return (session peer, inner bytes). Raises DecodeError on a malformed encapsulation."""
    if not is_encapsulated(data):
        return addr, data
    hdr = data[0]
    if len(data) <= hdr:
        raise DecodeError("encapsulation without an inner packet")
    inner = data[hdr:]
    if is_encapsulated(inner):
        raise DecodeError("nested forwarder encapsulation")
    return ForwardedPeer(addr, bytes(data[3:hdr])), inner


def wrap(peer: Hashable, data: bytes, radius: int = 0) -> tuple[Hashable, bytes]:
    """Return (transport address, datagram) for a reply to ``peer``."""
    if isinstance(peer, ForwardedPeer):
        return peer.relay, encode(Encapsulated(peer.node_id, data, radius))
    return peer, data
