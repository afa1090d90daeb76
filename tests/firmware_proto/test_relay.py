"""RelayCore: forwarder encapsulation both ways, and DTLS end to end through it (no sockets)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from bridge.gateway.dtls_server import (
    ApplicationData,
    DtlsServer,
    HandshakeFailed,
    SessionClosed,
    looks_like_dtls,
)
from firmware_proto import dtls_client as dc
from firmware_proto.relay import RelayCore, RelayDropped, node_id_for
from firmware_proto.testing.dtls import VirtualLink
from mqttsn import Encapsulated, Pingreq, decode, encode
from wire.dtls_credentials import DtlsServerConfig

RELAY_ADDR = ("10.9.9.9", 47000)
KEYS = {"node-1": b"\x01" * 16, "node-2": b"\x02" * 16}


def test_node_id_for_addresses_ints_and_bytes() -> None:
    assert node_id_for(("127.0.0.1", 0x1234)) == bytes([127, 0, 0, 1, 0x12, 0x34])
    assert node_id_for(("::1", 1)) == bytes(15) + b"\x01\x00\x01"
    assert node_id_for(7) == b"\x00\x07"
    assert node_id_for(b"\xaa") == b"\xaa"
    assert node_id_for("node-7") is None


def test_uplink_is_wrapped_and_downlink_unwrapped_to_the_right_child() -> None:
    relay = RelayCore()
    inner = encode(Pingreq())
    relay.from_child(("192.168.1.5", 1000), inner, 0.0)
    relay.from_child("leaf-b", inner + b"x", 0.0)  # not an address: gets a 2-byte id
    up = [decode(d) for d in relay.datagrams_to_gateway()]
    assert isinstance(up[0], Encapsulated) and isinstance(up[1], Encapsulated)
    assert up[0].node_id == bytes([192, 168, 1, 5, 0x03, 0xE8]) and up[0].inner == inner
    assert up[0].radius == 0
    relay.from_gateway(encode(Encapsulated(node_id=up[1].node_id, inner=b"reply", radius=1)), 1.0)
    relay.from_gateway(encode(Encapsulated(node_id=up[0].node_id, inner=b"other")), 1.0)
    assert relay.datagrams_to_children() == [("leaf-b", b"reply"), (("192.168.1.5", 1000), b"other")]
    assert relay.forwarded_up == 2 and relay.forwarded_down == 2


def test_bad_downlink_is_dropped_with_an_event() -> None:
    relay = RelayCore()
    relay.from_gateway(b"\x05\xfe\x00\x00\x09", 0.0)  # unknown node id
    relay.from_gateway(encode(Pingreq()), 0.0)  # not encapsulated
    relay.from_gateway(b"\x00", 0.0)  # garbage
    relay.from_child(1, b"", 0.0)
    events = relay.events()
    assert [e.direction for e in events] == ["down", "down", "down", "up"]
    assert all(isinstance(e, RelayDropped) for e in events)
    assert relay.datagrams_to_children() == []


def test_encapsulated_dtls_is_not_mistaken_for_dtls() -> None:
    for n in range(1, 23):  # Length = 3 + n can equal a DTLS content type (20-25)
        wrapped = encode(Encapsulated(node_id=bytes(n), inner=b"\x16\xfe\xfd" + bytes(20)))
        assert not looks_like_dtls(wrapped)
    assert looks_like_dtls(b"\x16\xfe\xfd" + bytes(20))


class RelayedGateway:
    """Relay core in front of a DtlsServer; the gateway side decapsulates like the real driver.

    ``evil`` lets the relay misbehave on the wrapped uplink (drop/alter/forge/replay).
    """

    def __init__(self, server: DtlsServer, evil: Callable[[bytes], list[bytes]] | None = None):
        self.server = server
        self.seen: list[bytes] = []
        self.relay = RelayCore(tap=self.seen.append)
        self.evil = evil
        self.uplink: list[bytes] = []

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        self.relay.from_child(peer, data, now)
        for wrapped in self.relay.datagrams_to_gateway():
            for d in self.evil(wrapped) if self.evil else [wrapped]:
                self.uplink.append(d)
                packet = decode(d)
                assert isinstance(packet, Encapsulated)
                self.server.receive_datagram(packet.inner, (RELAY_ADDR, packet.node_id), now)

    def datagrams_to_send(self) -> list[tuple[Hashable, bytes]]:
        for (_, node_id), datagram in self.server.datagrams_to_send():  # type: ignore[misc]
            self.relay.from_gateway(encode(Encapsulated(node_id=node_id, inner=datagram)), 0.0)
        return self.relay.datagrams_to_children()

    def events(self) -> list[Any]:
        return self.server.events()

    def get_timer(self) -> float | None:
        return self.server.get_timer()

    def handle_timer(self, now: float) -> None:
        self.server.handle_timer(now)


def through_relay(
    evil: Callable[[bytes], list[bytes]] | None = None, **link: Any
) -> tuple[VirtualLink, RelayedGateway, dc.DtlsClient, dc.DtlsClient]:
    gw = RelayedGateway(DtlsServer(DtlsServerConfig(psk=KEYS)), evil)
    vl = VirtualLink(gw, **link)
    c1 = vl.add(1, dc.DtlsClient(dc.PskClientConfig("node-1", KEYS["node-1"])))
    c2 = vl.add(2, dc.DtlsClient(dc.PskClientConfig("node-2", KEYS["node-2"])))
    vl.run(
        300, stop=lambda: c1.state is dc.ClientState.ESTABLISHED and c2.state is dc.ClientState.ESTABLISHED
    )
    assert c1.state is dc.ClientState.ESTABLISHED and c2.state is dc.ClientState.ESTABLISHED
    return vl, gw, c1, c2


def received(vl: VirtualLink, device: str) -> list[bytes]:
    return [e.plaintext for e in vl.server_events if isinstance(e, ApplicationData) and e.device_id == device]


def test_relay_never_sees_plaintext_markers() -> None:
    vl, gw, c1, c2 = through_relay()
    markers = [b"MARKER-uplink-7f3a", b"MARKER-uplink-c001"]
    c1.send(markers[0])
    c2.send(markers[1])
    vl.run(vl.now + 1)
    gw.server.send(((RELAY_ADDR), b"\x00\x01"), b"MARKER-downlink-beef")
    vl.run(vl.now + 1)
    assert received(vl, "node-1") == [markers[0]] and received(vl, "node-2") == [markers[1]]
    assert [e for e in vl.client_events[1] if isinstance(e, dc.ApplicationData)] == [
        dc.ApplicationData(b"MARKER-downlink-beef")
    ]
    handled = b"".join(gw.seen)
    assert gw.relay.bytes_handled == len(handled) > 1000
    for marker in [*markers, b"MARKER", b"downlink"]:
        assert marker not in handled


def test_lossy_relay_handshake_completes() -> None:
    vl, _, c1, _ = through_relay(loss=0.3, seed=3)
    assert vl.lost > 0
    c1.send(b"hello after loss")
    vl.loss = 0.0
    vl.run(vl.now + 1)
    assert received(vl, "node-1") == [b"hello after loss"]


def test_datagrams_altered_forged_or_replayed_by_the_relay_are_rejected() -> None:
    mode: dict[str, Any] = {"on": False, "captured": None}

    def evil(wrapped: bytes) -> list[bytes]:
        if not mode["on"]:
            return [wrapped]
        mode["captured"] = wrapped
        altered = bytearray(wrapped)
        altered[-3] ^= 0x40
        forged = wrapped[:-20] + bytes(20)
        return [bytes(altered), forged, wrapped, wrapped]  # altered, forged, genuine, replayed

    vl, _gw, c1, c2 = through_relay(evil)
    mode["on"] = True
    c1.send(b"exactly once")
    vl.run(vl.now + 1)
    mode["on"] = False
    assert received(vl, "node-1") == [b"exactly once"]
    assert not [e for e in vl.server_events if isinstance(e, SessionClosed | HandshakeFailed)]
    c2.send(b"node-2 fine")
    c1.send(b"node-1 fine")
    vl.run(vl.now + 1)
    assert received(vl, "node-2") == [b"node-2 fine"]
    assert received(vl, "node-1") == [b"exactly once", b"node-1 fine"]
