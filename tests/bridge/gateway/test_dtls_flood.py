"""Half-open DTLS handshakes from keyless peers (issue 12 item 3), sans-I/O on virtual time.

A keyless attacker that receives at its address passes the cookie exchange and leaves the server
a half-open handshake per fake peer (a port, or a wireless node id in forwarder encapsulation).
These tests check that such half-opens have a budget of their own: bounded in all, per source
host and per relay, the oldest of the same source evicted, timed out after ``handshake_timeout``,
rate-limited before any mbedTLS work — and that established and returning nodes never notice.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.gateway.dtls_admission import HandshakeAdmission, HandshakeLimits, source_of
from bridge.gateway.dtls_listener import DtlsFront
from bridge.gateway.dtls_server import DtlsServer, HandshakeFailed, SessionRefused
from bridge.gateway.dtls_session import cookie_length
from firmware_proto import dtls_client as dc
from firmware_proto.testing.dtls import VirtualLink
from mqttsn import Encapsulated, ForwardedPeer, Gateway, GatewayConfig, encode
from tests.support.dtls_flood import KEYLESS, half_open
from wire.dtls_credentials import DtlsServerConfig

KEYS = {f"node-{i}": bytes([i]) * 16 for i in range(8)}
ATTACKER = "192.0.2.66"
RELAY = (ATTACKER, 47000)  # the attacker posing as a root relay
GOOD_RELAY = ("198.51.100.7", 47000)


def psk(i: int) -> dc.PskClientConfig:
    return dc.PskClientConfig(f"node-{i}", KEYS[f"node-{i}"])


def server(**kw: object) -> DtlsServer:
    return DtlsServer(DtlsServerConfig(psk=KEYS), **kw)  # type: ignore[arg-type]


def established(link: VirtualLink, peer: Hashable) -> bool:
    return any(isinstance(e, dc.SessionEstablished) for e in link.client_events[peer])


def connect(link: VirtualLink, peer: Hashable, config: dc.ClientConfig, until: float = 30) -> dc.DtlsClient:
    client = link.add(peer, dc.DtlsClient(config))
    link.run(link.now + until, stop=lambda: established(link, peer))
    return client


def flood(link: VirtualLink, peers: list[Hashable]) -> int:
    """Half-open handshakes from ``peers`` at the link's current time; how many got a ServerHello."""
    others: list[tuple[Hashable, bytes]] = []
    opened = sum(half_open(link.server, p, link.now, others) for p in peers)
    for p, d in others:
        link.inject("down", p, d)
    link.server_events.extend(link.server.events())
    return opened


def echo(link: VirtualLink, peer: Hashable, client: dc.DtlsClient, marker: bytes) -> bool:
    client.send(marker)
    link.run(link.now + 1)
    link.server.send(peer, b"re:" + marker)  # type: ignore[attr-defined]
    link.run(link.now + 1)
    got = [e.plaintext for e in link.client_events[peer] if isinstance(e, dc.ApplicationData)]
    return b"re:" + marker in got


# --- the attack of issue 12: fails on the main of e32c0c0 ----------------------------------------


def test_flood_through_one_relay_does_not_refuse_a_legit_handshake() -> None:
    """One source, forwarder-encapsulated node ids: on e32c0c0 the flood filled the session
    table (here 300) and the next legitimate handshake was refused."""
    srv = server(max_sessions=300)
    link = VirtualLink(srv)
    flood(link, [ForwardedPeer(RELAY, i.to_bytes(2, "big")) for i in range(300)])
    assert srv.session_count < 300
    peer = ("203.0.113.5", 5000)
    client = connect(link, peer, psk(1))
    assert established(link, peer)
    assert not any(isinstance(e, SessionRefused) and e.peer == peer for e in link.server_events)
    assert echo(link, peer, client, b"after the flood")


# --- caps and eviction -------------------------------------------------------------------------


def test_per_relay_cap_keeps_the_newest_half_opens_of_that_relay() -> None:
    srv = server(limits=HandshakeLimits(per_relay=4, per_source=8, burst=1000))
    link = VirtualLink(srv)
    peers = [ForwardedPeer(RELAY, bytes([i])) for i in range(20)]
    assert flood(link, peers) == 20  # every one got its ServerHello ...
    assert srv.handshake_count == 4  # ... and only the newest 4 are still held
    assert srv.admission.count(relay=RELAY) == 4
    evicted = [e.peer for e in link.server_events if isinstance(e, HandshakeFailed)]
    assert evicted == peers[:16]
    assert all("evicted" in e.reason for e in link.server_events if isinstance(e, HandshakeFailed))
    assert srv.stats["evicted"] == 16
    assert set(srv._sessions) == set(peers[16:])


def test_per_source_cap_counts_every_port_and_relay_of_one_host() -> None:
    srv = server(limits=HandshakeLimits(per_source=6, per_relay=100, burst=1000))
    link = VirtualLink(srv)
    direct = [(ATTACKER, 1000 + i) for i in range(10)]
    relayed = [ForwardedPeer((ATTACKER, 2000 + i % 3), bytes([i])) for i in range(10)]
    flood(link, direct + relayed)
    assert srv.handshake_count == 6
    assert srv.admission.count(source=ATTACKER) == 6


def test_global_cap_evicts_from_the_busiest_source_only() -> None:
    limits = HandshakeLimits(max_handshakes=10, per_source=8, burst=1000)
    srv = server(limits=limits)
    link = VirtualLink(srv)
    quiet = [("198.51.100.1", 1)]  # one half-open from a host that is not flooding
    flood(link, quiet)
    flood(link, [(ATTACKER, p) for p in range(8)])  # 1 + 8 = 9
    flood(link, [("192.0.2.99", p) for p in range(4)])  # needs room: evicts from ATTACKER
    assert srv.handshake_count == 10
    assert quiet[0] in srv._sessions
    assert srv.admission.count(source=ATTACKER) == 5
    assert srv.admission.count(source="192.0.2.99") == 4


def test_half_open_costs_at_most_max_handshakes_contexts_whatever_the_flood() -> None:
    srv = server(limits=HandshakeLimits(max_handshakes=24, per_source=4, burst=1000))
    link = VirtualLink(srv)
    for host in range(12):
        flood(link, [(f"192.0.2.{host}", p) for p in range(10)])
        assert srv.handshake_count <= 24
    assert srv.handshake_count == 24
    assert srv.session_count == 24  # nothing else is held


def test_half_opens_time_out_after_handshake_timeout() -> None:
    srv = server(handshake_timeout=5.0)
    link = VirtualLink(srv)
    flood(link, [ForwardedPeer(RELAY, bytes([i])) for i in range(10)])
    assert srv.handshake_count == 10
    link.run(4.9)
    assert srv.handshake_count == 10
    link.run(5.1)
    assert srv.handshake_count == 0 and srv.session_count == 0
    assert srv.get_timer() is None
    failed = [e for e in link.server_events if isinstance(e, HandshakeFailed)]
    assert len(failed) == 10 and all("5 s" in e.reason for e in failed)


# --- established and returning nodes while a flood runs ----------------------------------------


def test_established_sessions_survive_a_flood_that_fills_the_half_open_budget() -> None:
    limits = HandshakeLimits(max_handshakes=32, per_source=4, per_relay=4, burst=1000)
    srv = server(limits=limits)
    link = VirtualLink(srv)
    nodes = {("203.0.113.1", 5000 + i): i for i in range(3)}
    nodes[ForwardedPeer(GOOD_RELAY, b"\x01")] = 3
    clients = {peer: connect(link, peer, psk(i)) for peer, i in nodes.items()}
    assert all(established(link, p) for p in nodes)
    for wave in range(3):  # 3 waves of 16 sources x 6 peers: the budget stays full
        for host in range(16):
            flood(link, [(f"192.0.2.{host}", 100 * wave + p) for p in range(6)])
        assert srv.handshake_count == 32
        for peer, client in clients.items():
            assert echo(link, peer, client, f"wave {wave}".encode())
    assert not any(
        isinstance(e, HandshakeFailed | SessionRefused) and e.peer in nodes for e in link.server_events
    )
    assert all(srv.device_id(p) == f"node-{i}" for p, i in nodes.items())


def test_new_node_from_another_source_gets_in_while_the_budget_is_full() -> None:
    srv = server(limits=HandshakeLimits(max_handshakes=16, per_source=4, burst=1000))
    link = VirtualLink(srv)
    for host in range(8):
        flood(link, [(f"192.0.2.{host}", p) for p in range(4)])
    assert srv.handshake_count == 16
    peer = ("203.0.113.9", 5000)
    connect(link, peer, psk(2))
    assert established(link, peer)


def test_returning_node_behind_the_flooded_relay_is_never_evicted() -> None:
    """A node that connected before through relay R reconnects while R's half-open budget is
    flooded between every datagram of its handshake: it is never evicted and gets in."""
    limits = HandshakeLimits(per_relay=4, per_source=8, burst=100_000)
    srv = server(limits=limits)
    link = VirtualLink(srv)
    me = ForwardedPeer(RELAY, b"\xaa\xaa")
    first = connect(link, me, psk(4))
    assert established(link, me)
    first.close()
    link.run(link.now + 1)
    assert srv.device_id(me) is None
    ids = iter(range(10_000))

    def flood_between(direction: str, peer: Hashable, datagram: bytes) -> list[bytes]:
        if peer == me:  # 8 fresh half-opens through the same relay before each of my datagrams
            flood(link, [ForwardedPeer(RELAY, next(ids).to_bytes(2, "big")) for _ in range(8)])
        return [datagram]

    link.tamper = flood_between
    connect(link, me, psk(4))
    assert established(link, me)
    assert srv.device_id(me) == "node-4"
    assert srv.stats["evicted"] >= 8
    assert not any(isinstance(e, HandshakeFailed) and e.peer == me for e in link.server_events)


def test_new_node_behind_the_flooded_relay_gets_in_when_the_flood_is_slower_than_its_cap() -> None:
    limits = HandshakeLimits(per_relay=4, per_source=8, burst=100_000)
    srv = server(limits=limits)
    link = VirtualLink(srv)
    me = ForwardedPeer(RELAY, b"\xbb\xbb")
    ids = iter(range(10_000))

    def flood_between(direction: str, peer: Hashable, datagram: bytes) -> list[bytes]:
        if peer == me:  # fewer than per_relay newcomers per round trip: mine is not the oldest
            flood(link, [ForwardedPeer(RELAY, next(ids).to_bytes(2, "big")) for _ in range(1)])
        return [datagram]

    link.tamper = flood_between
    connect(link, me, psk(5))
    assert established(link, me)


# --- rate limits before any mbedTLS work -------------------------------------------------------


def test_cookieless_hellos_over_the_source_rate_get_no_answer_other_sources_do() -> None:
    srv = server(limits=HandshakeLimits(hello_rate=10.0, hello_burst=20))
    probe = dc.DtlsClient(KEYLESS)
    probe.start(0.0)
    (hello,) = probe.datagrams_to_send()
    assert cookie_length(hello) == 0
    for port in range(50):
        srv.receive_datagram(hello, (ATTACKER, port), 0.0)
    assert len(srv.datagrams_to_send()) == 20
    assert srv.stats["rate_limited"] == 30
    srv.receive_datagram(hello, ("203.0.113.1", 1), 0.0)
    assert len(srv.datagrams_to_send()) == 1
    srv.receive_datagram(hello, (ATTACKER, 99), 1.0)  # 10 tokens back after 1 s
    assert len(srv.datagrams_to_send()) == 1


def test_new_half_opens_per_source_are_rate_limited() -> None:
    srv = server(limits=HandshakeLimits(rate=2.0, burst=3, per_source=100))
    link = VirtualLink(srv)
    assert flood(link, [(ATTACKER, p) for p in range(10)]) == 3
    assert srv.handshake_count == 3
    link.run(1.0)
    assert flood(link, [(ATTACKER, 100 + p) for p in range(10)]) == 2


def test_returning_peers_skip_the_rate_limit() -> None:
    srv = server(limits=HandshakeLimits(rate=1.0, burst=1))
    link = VirtualLink(srv)
    me = (ATTACKER, 7)
    connect(link, me, psk(6)).close()  # uses the only token of ATTACKER
    link.run(link.now + 0.5)
    assert flood(link, [(ATTACKER, 8)]) == 0  # a stranger from the same host: no token
    connect(link, me, psk(6))
    assert srv.device_id(me) == "node-6"


def test_flood_writes_a_handful_of_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    srv = server(limits=HandshakeLimits(per_relay=2, burst=10**5, hello_burst=10**5), handshake_timeout=2.0)
    link = VirtualLink(srv)
    with caplog.at_level(logging.INFO, logger="meshota.dtls"):
        flood(link, [ForwardedPeer(RELAY, i.to_bytes(2, "big")) for i in range(500)])
        link.run(5.0)
    assert srv.stats["evicted"] == 498
    assert len(caplog.records) <= 20
    assert any("so far" in r.getMessage() for r in caplog.records)


# --- the door: muted addresses are screened before anything is parsed ---------------------------


def _hello() -> bytes:
    probe = dc.DtlsClient(KEYLESS)
    probe.start(0.0)
    (hello,) = probe.datagrams_to_send()
    return hello


def wrapped(node_id: bytes, inner: bytes) -> bytes:
    return encode(Encapsulated(node_id=node_id, inner=inner))


def test_a_muted_relay_loses_its_client_hellos_at_the_door_and_nothing_else() -> None:
    srv = server(limits=HandshakeLimits(hello_rate=4.0, hello_burst=4))
    link = VirtualLink(srv)
    child = ForwardedPeer(RELAY, b"\xc0")
    client = connect(link, child, psk(7))  # a node behind the relay, with a session
    hello = _hello()
    for i in range(6):  # the relay spends its 4 tokens (and one more for the handshake above)
        srv.receive_datagram(hello, ForwardedPeer(RELAY, bytes([i])), link.now)
    srv.datagrams_to_send()
    assert srv.admission.is_muted(RELAY, link.now)
    assert srv.screen(wrapped(b"\x99", hello), RELAY, link.now)  # a stranger's hello: dropped
    assert not srv.screen(wrapped(b"\xc0", hello), RELAY, link.now)  # the known child: let in
    client.send(b"data")
    (record,) = client.datagrams_to_send()
    assert not srv.screen(wrapped(b"\xc0", record), RELAY, link.now)  # not a hello: let in
    assert not srv.screen(hello, ("203.0.113.1", 1), link.now)  # another address: let in
    assert not srv.screen(wrapped(b"\x99", hello), RELAY, link.now + 1.0)  # a token is back


def test_the_front_screens_a_relay_flood_before_decoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.gateway.dtls_listener as listener

    decoded = 0
    real_decode = listener.decode

    def counting_decode(data: bytes) -> object:
        nonlocal decoded
        decoded += 1
        return real_decode(data)

    monkeypatch.setattr(listener, "decode", counting_decode)
    srv = server(limits=HandshakeLimits(hello_rate=10.0, hello_burst=20))
    front = DtlsFront(srv, Gateway(GatewayConfig()))
    hello = _hello()
    for i in range(2000):
        front.receive_datagram(wrapped(i.to_bytes(2, "big"), hello), RELAY, 0.0)
    assert srv.stats["hello_verify_sent"] == 20
    assert srv.stats["rate_limited"] == 1980
    assert decoded == 21  # 20 answered, 1 that found the bucket empty and muted the relay
    assert len(front.datagrams_to_send()) == 20


# --- invariants --------------------------------------------------------------------------------


def test_cookie_length_reads_real_client_hellos() -> None:
    srv = server()
    client = dc.DtlsClient(psk(0))
    client.start(0.0)
    (hello,) = client.datagrams_to_send()
    srv.receive_datagram(hello, ("203.0.113.1", 1), 0.0)
    for _, d in srv.datagrams_to_send():
        client.receive_datagram(d, 0.0)
    (cookied,) = client.datagrams_to_send()
    assert cookie_length(hello) == 0 and cookie_length(cookied) > 0


@given(st.binary(max_size=120))
def test_cookie_length_never_raises(data: bytes) -> None:
    assert 0 <= cookie_length(data) <= 255


def test_source_of_groups_ports_and_ipv6_prefixes() -> None:
    assert source_of(("192.0.2.1", 5)) == source_of(("192.0.2.1", 6)) == ("192.0.2.1", None)
    assert source_of(("2001:db8::1", 5, 0, 0))[0] == source_of(("2001:db8::ffff", 9, 0, 0))[0]
    assert source_of(("2001:db8::1", 5, 0, 0))[0] != source_of(("2001:db8:0:1::1", 5, 0, 0))[0]
    assert source_of(ForwardedPeer(RELAY, b"\x01")) == (ATTACKER, RELAY)
    assert source_of(17) == (17, None)


_peer = st.one_of(
    st.tuples(st.sampled_from(["192.0.2.1", "192.0.2.2", "203.0.113.3"]), st.integers(0, 5)),
    st.builds(
        ForwardedPeer,
        st.sampled_from([RELAY, GOOD_RELAY, ("192.0.2.1", 9)]),
        st.binary(min_size=1, max_size=1),
    ),
)
_op = st.tuples(st.sampled_from(["admit", "remove", "remember"]), _peer)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=80))
def test_admission_never_exceeds_its_caps(ops: list[tuple[str, Hashable]]) -> None:
    lim = HandshakeLimits(max_handshakes=6, per_source=3, per_relay=2)
    adm = HandshakeAdmission(lim)
    held: set[Hashable] = set()

    def evict(victim: Hashable, reason: str) -> None:
        assert victim in held and not adm.is_known(victim)
        held.discard(victim)
        adm.remove(victim)

    for op, peer in ops:
        if op == "admit" and peer not in held:
            if adm.admit(peer, evict) is None:
                adm.add(peer)
                held.add(peer)
        elif op == "remove":
            adm.remove(peer)
            held.discard(peer)
        elif op == "remember" and peer not in held:  # the server remembers established peers
            adm.remember(peer)
        assert adm.half_open == len(held) <= lim.max_handshakes
        unknown = [p for p in held if not adm._half_open[p].known]
        for p in unknown:
            source, relay = source_of(p)
            assert sum(1 for q in unknown if source_of(q)[0] == source) <= lim.per_source
            if relay is not None:
                assert sum(1 for q in unknown if source_of(q)[1] == relay) <= lim.per_relay
        assert sum(adm._per_source.values()) == len(held)
