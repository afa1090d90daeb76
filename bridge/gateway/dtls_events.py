"""Events of :class:`~bridge.gateway.dtls_server.DtlsServer` (frozen dataclasses, each names its ``peer``)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "ApplicationData",
    "HandshakeFailed",
    "NoSessionError",
    "Peer",
    "ServerEvent",
    "SessionClosed",
    "SessionEstablished",
    "SessionRefused",
]

Peer: TypeAlias = Hashable


class NoSessionError(LookupError):
    """``send``/``close`` named a peer without an established session (caller's bug or race)."""


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    peer: Peer
    device_id: str


@dataclass(frozen=True, slots=True)
class ApplicationData:
    peer: Peer
    device_id: str
    plaintext: bytes


@dataclass(frozen=True, slots=True)
class SessionClosed:
    peer: Peer
    device_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    peer: Peer
    reason: str


@dataclass(frozen=True, slots=True)
class SessionRefused:
    peer: Peer
    reason: str


ServerEvent: TypeAlias = (
    SessionEstablished | ApplicationData | SessionClosed | HandshakeFailed | SessionRefused
)
