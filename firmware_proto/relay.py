"""Sans-I/O root-node relay: a blind MQTT-SN forwarder for its children's DTLS datagrams.

The root of a sub-mesh forwards what its children send to the gateway, wrapped in MQTT-SN v1.2
forwarder encapsulation (§5.5: ``Length 0xFE Ctrl WirelessNodeId`` + the child's datagram), and
unwraps the gateway's encapsulated replies to the child the WirelessNodeId names. The inner
datagrams are DTLS records the relay cannot read: it holds no keys and never parses them.

::

    relay = RelayCore()
    relay.from_child(child, datagram, now)     # child: any hashable (UDP address, mesh node id)
    relay.from_gateway(datagram, now)
    for datagram in relay.datagrams_to_gateway(): ...
    for child, datagram in relay.datagrams_to_children(): ...
    relay.events()                             # RelayDropped(direction, reason) for bad input

WirelessNodeId: :func:`node_id_for` derives it from the child — an IPv4/IPv6 UDP address becomes
its packed address + port (6 or 18 bytes), an int a 2-byte (or 8-byte) id, bytes stay as they
are; anything else is given a 2-byte id in order of first appearance. The reverse map is learned
uplink, so downlink traffic only reaches children that have spoken first (the gateway answers
encapsulated traffic encapsulated, to the same relay).

``bytes_handled`` counts every byte the relay saw, both directions, before and after wrapping;
``tap``, if given, is called with each of those byte strings (tests check that no plaintext
marker a node publishes ever shows up there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from mqttsn import DecodeError, Encapsulated, decode, encode

__all__ = ["RelayCore", "RelayDropped", "node_id_for"]


@dataclass(frozen=True, slots=True)
class RelayDropped:
    direction: str  # "up" (child → gateway) or "down" (gateway → child)
    reason: str


def node_id_for(child: Hashable) -> bytes | None:
    """The WirelessNodeId for ``child`` when it can be derived from the value alone."""
    if isinstance(child, bytes):
        return child
    if isinstance(child, int) and child >= 0:
        return child.to_bytes(2 if child < 0x10000 else 8, "big")
    if isinstance(child, tuple) and len(child) >= 2 and isinstance(child[1], int):
        try:
            addr = ipaddress.ip_address(child[0])
        except ValueError:
            return None
        return addr.packed + child[1].to_bytes(2, "big")
    return None


class RelayCore:
    """Forwarder-encapsulation relay state (see the module docstring)."""

    def __init__(
        self,
        *,
        max_datagram: int = 1280,
        tap: Callable[[bytes], None] | None = None,
    ) -> None:
        self.max_datagram = max_datagram
        self.tap = tap
        self.bytes_handled = 0
        self.forwarded_up = 0
        self.forwarded_down = 0
        self._by_node: dict[bytes, Hashable] = {}
        self._by_child: dict[Hashable, bytes] = {}
        self._to_gateway: list[bytes] = []
        self._to_children: list[tuple[Hashable, bytes]] = []
        self._events: list[RelayDropped] = []

    def _see(self, data: bytes) -> None:
        self.bytes_handled += len(data)
        if self.tap is not None:
            self.tap(data)

    def node_id(self, child: Hashable) -> bytes:
        known = self._by_child.get(child)
        if known is not None:
            return known
        node = node_id_for(child)
        if node is None:
            node = len(self._by_child).to_bytes(2, "big")
            while node in self._by_node:  # pragma: no cover - only with mixed id kinds
                node = (int.from_bytes(node, "big") + 1).to_bytes(2, "big")
        self._by_child[child] = node
        self._by_node[node] = child
        return node

    def from_child(self, child: Hashable, datagram: bytes, now: float) -> None:
        """Wrap one datagram from ``child`` for the gateway."""
        self._see(datagram)
        if not datagram:
            self._events.append(RelayDropped("up", "empty datagram"))
            return
        node = self.node_id(child)
        try:
            wrapped = encode(Encapsulated(node_id=node, inner=bytes(datagram), radius=0))
        except Exception as exc:  # LocalProtocolError from the codec: cannot be encapsulated
            self._events.append(RelayDropped("up", f"cannot encapsulate: {exc}"))
            return
        if len(wrapped) > self.max_datagram:
            self._events.append(RelayDropped("up", f"{len(wrapped)} bytes exceed {self.max_datagram}"))
            return
        self._see(wrapped)
        self.forwarded_up += 1
        self._to_gateway.append(wrapped)

    def from_gateway(self, datagram: bytes, now: float) -> None:
        """Unwrap one datagram from the gateway and queue it for the child it names."""
        self._see(datagram)
        try:
            packet = decode(datagram)
        except DecodeError as exc:
            self._events.append(RelayDropped("down", f"undecodable: {exc}"))
            return
        if not isinstance(packet, Encapsulated):
            self._events.append(RelayDropped("down", f"not encapsulated ({type(packet).__name__})"))
            return
        child = self._by_node.get(packet.node_id)
        if child is None:
            self._events.append(RelayDropped("down", f"unknown node id {packet.node_id.hex()}"))
            return
        self._see(packet.inner)
        self.forwarded_down += 1
        self._to_children.append((child, packet.inner))

    def datagrams_to_gateway(self) -> list[bytes]:
        out, self._to_gateway = self._to_gateway, []
        return out

    def datagrams_to_children(self) -> list[tuple[Hashable, bytes]]:
        out, self._to_children = self._to_children, []
        return out

    def events(self) -> list[RelayDropped]:
        out, self._events = self._events, []
        return out
