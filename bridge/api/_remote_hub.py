"""The deviceconnect relay: connected devices (mender-connect) and the user sessions on them.

Transport-free: a peer is anything with ``send(bytes)`` and ``close(code, reason)`` (the HTTP
adapter's websockets; a test's in-memory pair). One process holds its own devices and sessions: a
user must reach the process the device is connected to (docs/remote_access.md, scale-out).

Each user session gets a server-chosen session id; what the user sends is re-stamped with it and
with the user's id (``props.user_id``, which mender-connect's per-user limits count), so a user
can neither reach another session nor pose as another user. Only the protocols the owner granted
pass. What the device sends reaches the session whose id it names, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ._limits import ApiLimits
from ._remote_proto import (
    PROTO_CONTROL,
    PROTO_NAMES,
    PROTO_SHELL,
    ProtoMsg,
    decode_msg,
    encode_msg,
    restamp,
)
from ._types import ApiError

if TYPE_CHECKING:  # _remote_access imports the context, which holds the hub
    from ._remote_access import SessionTicket

__all__ = ["CLOSE_GRANT_ENDED", "DeviceLink", "Peer", "RemoteHub", "UserSession"]

# websocket close codes of a user's session (4000-4999: private use)
CLOSE_GRANT_ENDED = 4001  # the owner's grant expired or was revoked
CLOSE_DEVICE_GONE = 4002  # the device's link closed
CLOSE_REFUSED = 4003  # the user sent something the relay does not pass


class Peer(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(eq=False)
class UserSession:
    sid: str
    ticket: SessionTicket
    peer: Peer
    link: DeviceLink
    started: float
    bytes_to_device: int = 0
    bytes_to_user: int = 0
    messages: int = 0
    protocols: set[str] = field(default_factory=set)
    end_reason: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def summary(self, now: float) -> dict[str, object]:
        return {
            "session_id": self.sid,
            "started": self.started,
            "duration": round(max(0.0, now - self.started), 3),
            "bytes_to_device": self.bytes_to_device,
            "bytes_to_user": self.bytes_to_user,
            "messages": self.messages,
            "protocols": sorted(self.protocols),
            "end_reason": self.end_reason or "closed",
        }


@dataclass(eq=False)
class DeviceLink:
    device_id: str
    tenant_id: str
    peer: Peer
    connected: float = 0.0
    sessions: dict[str, UserSession] = field(default_factory=dict)
    dropped: int = 0  # device messages naming no open session


class RemoteHub:
    def __init__(self, limits: ApiLimits) -> None:
        self.limits = limits
        self.devices: dict[str, DeviceLink] = {}
        self.session_count = 0
        self._by_user: dict[str, int] = {}
        self._seq = 0

    # -- devices -----------------------------------------------------------------------------
    def attach(
        self, device_id: str, tenant_id: str, peer: Peer, now: float = 0.0
    ) -> tuple[DeviceLink, DeviceLink | None]:
        """Register a device's link; returns (it, the link it replaces — the caller closes that)."""
        old = self.devices.get(device_id)
        if old is None and len(self.devices) >= self.limits.remote_devices_max:
            raise ApiError(503, "too many connected devices in this server process")
        link = DeviceLink(device_id, tenant_id, peer, now)
        self.devices[device_id] = link
        return link, old

    def detach(self, link: DeviceLink) -> list[UserSession]:
        """Forget the link; returns its sessions, which the caller ends."""
        if self.devices.get(link.device_id) is link:
            del self.devices[link.device_id]
        return list(link.sessions.values())

    async def from_device(self, link: DeviceLink, data: bytes) -> None:
        msg = decode_msg(data, self.limits.remote_device_message_max)
        session = link.sessions.get(msg.sid) if msg.sid else None
        if session is None:
            link.dropped += 1
            return
        session.bytes_to_user += len(data)
        try:
            await session.peer.send(data)
        except Exception:  # the user's side is gone or overflowing: that session ends, the link stays
            await self.end(session, "user unreachable")

    # -- user sessions ---------------------------------------------------------------------------
    def open(self, ticket: SessionTicket, peer: Peer, tenant_id: str, now: float) -> UserSession:
        link = self.devices.get(ticket.device_id)
        if link is None or link.tenant_id != tenant_id:
            raise ApiError(409, "the device is not connected (is mender-connect running on it?)")
        if len(link.sessions) >= self.limits.remote_sessions_per_device:
            raise ApiError(429, f"the device has {len(link.sessions)} open sessions already")
        if self.session_count >= self.limits.remote_sessions_max:
            raise ApiError(429, "too many remote sessions open in this server process")
        user = ticket.principal.id
        if self._by_user.get(user, 0) >= self.limits.remote_sessions_per_user:
            raise ApiError(429, f"{self._by_user[user]} remote sessions of this user are open already")
        self._seq += 1
        sid = f"{ticket.device_id[:8]}-{int(now * 1000):x}-{self._seq}"
        session = UserSession(sid, ticket, peer, link, now)
        link.sessions[sid] = session
        self.session_count += 1
        self._by_user[user] = self._by_user.get(user, 0) + 1
        return session

    async def from_user(self, session: UserSession, data: bytes) -> None:
        """Relay one user message to the device: re-stamped, only a granted protocol."""
        msg = decode_msg(data, self.limits.remote_user_message_max)
        if msg.proto != PROTO_CONTROL and msg.proto not in session.ticket.protocols:
            name = PROTO_NAMES.get(msg.proto, str(msg.proto))
            raise ApiError(403, f"protocol {name} is not granted for this device")
        out = restamp(data, session.sid, {"user_id": session.ticket.principal.id})
        if len(out) > self.limits.remote_user_message_max:
            raise ApiError(413, f"message exceeds {self.limits.remote_user_message_max} bytes")
        session.protocols.add(PROTO_NAMES.get(msg.proto, str(msg.proto)))
        session.bytes_to_device += len(out)
        session.messages += 1
        await session.link.peer.send(out)

    async def to_device(self, session: UserSession, msg: ProtoMsg) -> None:
        """A message the server itself speaks on a session (the HTTP file routes): stamped with the
        session and its user, encoded once, never parsed back."""
        if msg.proto != PROTO_CONTROL and msg.proto not in session.ticket.protocols:
            raise ApiError(
                403, f"protocol {PROTO_NAMES.get(msg.proto, msg.proto)} is not granted for this device"
            )
        props = {**msg.props, "user_id": session.ticket.principal.id}
        out = encode_msg(ProtoMsg(msg.proto, msg.typ, session.sid, props, msg.body))
        session.protocols.add(PROTO_NAMES.get(msg.proto, str(msg.proto)))
        session.bytes_to_device += len(out)
        session.messages += 1
        await session.link.peer.send(out)

    async def end(self, session: UserSession, reason: str, code: int = 1000) -> bool:
        """Close the session on both sides (once); False if it had ended already."""
        if session.end_reason is not None:
            return False
        session.end_reason = reason
        session.ended.set()
        link = session.link
        if link.sessions.pop(session.sid, None) is not None:
            self.session_count -= 1
            user = session.ticket.principal.id
            left = self._by_user.get(user, 1) - 1
            if left > 0:
                self._by_user[user] = left
            else:
                self._by_user.pop(user, None)
        if self.devices.get(link.device_id) is link:
            who = self._who(session)
            # the device's link may be going away too; its own handler cleans up then
            with contextlib.suppress(Exception):
                if "shell" in session.protocols:
                    await link.peer.send(encode_msg(ProtoMsg(PROTO_SHELL, "stop", session.sid, who)))
                await link.peer.send(encode_msg(ProtoMsg(PROTO_CONTROL, "close", session.sid, who)))
        with contextlib.suppress(Exception):
            await session.peer.close(code, reason[:120])
        return True

    @staticmethod
    def _who(session: UserSession) -> dict[str, object]:
        return {"user_id": session.ticket.principal.id}
