"""DtlsServer ↔ DtlsClient pairs on a virtual clock: no sockets, no sleeping."""

from __future__ import annotations

import logging
import random
from collections.abc import Hashable

import pytest

from bridge.gateway.dtls_server import (
    ApplicationData,
    DtlsServer,
    HandshakeFailed,
    NoSessionError,
    SessionClosed,
    SessionEstablished,
    SessionRefused,
)
from firmware_proto import dtls_client as dc
from firmware_proto.testing.dtls import VirtualLink, make_ca, make_cert
from wire.dtls_credentials import CertificateCredentials, DtlsServerConfig

KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))
PSKS = {"node-a": KEY_A, "node-b": KEY_B}
A, B = ("10.0.0.1", 5000), ("10.0.0.2", 5000)


def psk_server(**kw: object) -> DtlsServer:
    return DtlsServer(DtlsServerConfig(psk=PSKS), **kw)  # type: ignore[arg-type]


def established(link: VirtualLink, peer: Hashable) -> bool:
    return any(isinstance(e, dc.SessionEstablished) for e in link.client_events[peer])


def client_failed(link: VirtualLink, peer: Hashable) -> bool:
    return any(isinstance(e, dc.HandshakeFailed) for e in link.client_events[peer])


def server_data(link: VirtualLink, peer: Hashable) -> list[bytes]:
    return [e.plaintext for e in link.server_events if isinstance(e, ApplicationData) and e.peer == peer]


def client_data(link: VirtualLink, peer: Hashable) -> list[bytes]:
    return [e.plaintext for e in link.client_events[peer] if isinstance(e, dc.ApplicationData)]


def connect(link: VirtualLink, peer: Hashable, config: dc.ClientConfig) -> dc.DtlsClient:
    client = link.add(peer, dc.DtlsClient(config))
    link.run(link.now + 300, stop=lambda: established(link, peer) or client_failed(link, peer))
    return client


def roundtrip(link: VirtualLink, peer: Hashable, client: dc.DtlsClient, marker: bytes) -> None:
    """Client → server → client, and check both arrived exactly once."""
    client.send(marker)
    link.run(link.now + 1)
    assert server_data(link, peer).count(marker) == 1
    link.server.send(peer, b"re:" + marker)  # type: ignore[attr-defined]
    link.run(link.now + 1)
    assert client_data(link, peer).count(b"re:" + marker) == 1


def test_psk_handshake_and_application_data_both_ways() -> None:
    server = psk_server()
    link = VirtualLink(server)
    client = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    assert established(link, A)
    assert SessionEstablished(A, "node-a") in link.server_events
    assert server.device_id(A) == "node-a"
    roundtrip(link, A, client, b"CONNECT node-a")
    events = [e for e in link.server_events if isinstance(e, ApplicationData)]
    assert events == [ApplicationData(A, "node-a", b"CONNECT node-a")]


def test_cookie_exchange_first_answer_is_hello_verify_no_larger_than_client_hello() -> None:
    server = psk_server()
    link = VirtualLink(server)
    connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    wire = link.delivered
    hello1, answer1, hello2 = wire[0], wire[1], wire[2]
    assert hello1[0] == "up" and answer1[0] == "down" and hello2[0] == "up"
    assert answer1[2][13] == 3  # HelloVerifyRequest handshake message
    assert len(answer1[2]) <= len(hello1[2])
    assert len(hello2[2]) > len(hello1[2])  # the ClientHello again, now with the cookie
    assert server.stats["hello_verify_sent"] == 1


def test_cookieless_client_hello_creates_no_state_and_a_small_answer() -> None:
    server = psk_server()
    probe = dc.DtlsClient(dc.PskClientConfig("node-a", KEY_A))
    probe.start(0.0)
    (hello,) = probe.datagrams_to_send()
    for i in range(50):  # a spoofed flood from 50 addresses
        server.receive_datagram(hello, ("192.0.2.9", i), 0.0)
    out = server.datagrams_to_send()
    assert len(out) == 50
    assert all(len(d) <= len(hello) for _, d in out)
    assert server.session_count == 0
    assert server.get_timer() is None


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_lossy_link_handshake_completes_through_retransmissions(seed: int) -> None:
    server = psk_server()
    link = VirtualLink(server, loss=0.4, seed=seed)
    client = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    assert established(link, A)
    assert link.lost >= 3
    assert link.now > 1.0  # at least one retransmission timer (1 s) had to fire
    assert len(link.delivered) + link.lost > 6  # a clean handshake is 6 datagrams
    link.loss = 0.0
    roundtrip(link, A, client, b"after loss")


def test_same_seed_gives_the_same_wire_trace_shape() -> None:
    def trace(seed: int) -> list[tuple[str, int]]:
        link = VirtualLink(psk_server(), loss=0.3, seed=seed)
        connect(link, A, dc.PskClientConfig("node-a", KEY_A))
        return [(d, len(b)) for d, _, b in link.delivered]

    assert trace(5) == trace(5)


def test_wrong_psk_is_rejected_and_other_session_is_unaffected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = psk_server()
    link = VirtualLink(server)
    good = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    with caplog.at_level(logging.WARNING, logger="meshota.dtls"):
        connect(link, B, dc.PskClientConfig("node-b", KEY_A))  # wrong key for node-b
        link.run(link.now + 300)
    assert client_failed(link, B)
    failures = [e for e in link.server_events if isinstance(e, HandshakeFailed)]
    assert [f.peer for f in failures] == [B]
    assert "node-b" in caplog.text or "wrong key" in failures[0].reason
    assert server.device_id(B) is None
    roundtrip(link, A, good, b"still fine")


def test_unknown_identity_is_rejected_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    server = psk_server()
    link = VirtualLink(server)
    good = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    with caplog.at_level(logging.WARNING, logger="meshota.dtls"):
        connect(link, B, dc.PskClientConfig("node-zz", KEY_B))
    assert client_failed(link, B)
    (failure,) = [e for e in link.server_events if isinstance(e, HandshakeFailed)]
    assert "unknown PSK identity" in failure.reason and "node-zz" in failure.reason
    assert "node-zz" in caplog.text
    roundtrip(link, A, good, b"unaffected")


@pytest.fixture(scope="module")
def pki() -> dict[str, object]:
    ca = make_ca("meshota CA")
    other = make_ca("rogue CA")
    return {
        "ca": ca,
        "server": make_cert(ca, "gateway", 10),
        "node": make_cert(ca, "node-c", 11),
        "rogue": make_cert(other, "node-c", 12),
    }


def cert_server(pki: dict[str, object], **kw: object) -> DtlsServer:
    ca, (crt, key) = pki["ca"], pki["server"]
    creds = CertificateCredentials((crt,), key, (ca[0],))  # type: ignore[index]
    return DtlsServer(DtlsServerConfig(psk=PSKS, certificate=creds), **kw)  # type: ignore[arg-type]


def test_certificate_handshake_takes_device_id_from_subject_cn(pki: dict[str, object]) -> None:
    server = cert_server(pki)
    link = VirtualLink(server)
    crt, key = pki["node"]  # type: ignore[misc]
    client = connect(link, A, dc.CertificateClientConfig(crt, key, pki["ca"][0]))  # type: ignore[index]
    assert established(link, A)
    assert SessionEstablished(A, "node-c") in link.server_events
    roundtrip(link, A, client, b"cert data")
    # PSK clients still work on the same listener
    psk = connect(link, B, dc.PskClientConfig("node-b", KEY_B))
    roundtrip(link, B, psk, b"psk data")


def test_certificate_from_another_ca_is_rejected(pki: dict[str, object]) -> None:
    server = cert_server(pki)
    link = VirtualLink(server)
    good = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    crt, key = pki["rogue"]  # type: ignore[misc]
    connect(link, B, dc.CertificateClientConfig(crt, key, pki["ca"][0]))  # type: ignore[index]
    assert client_failed(link, B)
    (failure,) = [e for e in link.server_events if isinstance(e, HandshakeFailed)]
    assert failure.peer == B and "certificate" in failure.reason
    roundtrip(link, A, good, b"fine")


def two_sessions(**kw: object) -> tuple[VirtualLink, dc.DtlsClient, dc.DtlsClient]:
    link = VirtualLink(psk_server(**kw))
    a = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    b = connect(link, B, dc.PskClientConfig("node-b", KEY_B))
    return link, a, b


def test_altered_record_is_dropped_without_effect_on_any_session() -> None:
    link, a, b = two_sessions()
    altered: list[bytes] = []

    def flip(direction: str, peer: Hashable, datagram: bytes) -> list[bytes]:
        if direction == "up" and peer == A and not altered:
            bad = bytearray(datagram)
            bad[-1] ^= 0x01  # last byte of the AEAD tag
            altered.append(bytes(bad))
            return [bytes(bad)]
        return [datagram]

    link.tamper = flip
    a.send(b"tampered")
    link.run(link.now + 1)
    assert altered and b"tampered" not in server_data(link, A)
    assert not [e for e in link.server_events if isinstance(e, SessionClosed | HandshakeFailed)]
    roundtrip(link, A, a, b"a after")
    roundtrip(link, B, b, b"b after")


def test_forged_record_injected_into_a_session_is_dropped() -> None:
    link, a, b = two_sessions()
    a.send(b"genuine")
    link.run(link.now + 1)
    genuine = [d for direction, p, d in link.delivered if direction == "up" and p == A][-1]
    forged = genuine[:13] + bytes(len(genuine) - 13)  # right header, garbage body
    link.inject("up", A, forged)
    link.inject("up", A, b"\x17\xfe\xfd" + bytes(40))  # not even a plausible header
    link.run(link.now + 1)
    assert server_data(link, A) == [b"genuine"]
    roundtrip(link, A, a, b"a after")
    roundtrip(link, B, b, b"b after")


@pytest.mark.parametrize("live_contexts", [256, 1])
def test_replayed_record_is_delivered_once(live_contexts: int) -> None:
    link, a, b = two_sessions(live_contexts=live_contexts)
    a.send(b"pay once")
    link.run(link.now + 1)
    record = [d for direction, p, d in link.delivered if direction == "up" and p == A][-1]
    b.send(b"b moves on")  # with live_contexts=1 this parks A
    link.run(link.now + 1)
    link.inject("up", A, record)
    link.run(link.now + 1)
    assert server_data(link, A) == [b"pay once"]
    roundtrip(link, A, a, b"a after")
    roundtrip(link, B, b, b"b after")
    if live_contexts == 1:
        assert link.server.stats["parked"] >= 1  # type: ignore[attr-defined]
        assert link.server.stats["restored"] >= 1  # type: ignore[attr-defined]


def test_max_sessions_refuses_with_event_log_and_alert(caplog: pytest.LogCaptureFixture) -> None:
    server = psk_server(max_sessions=1)
    link = VirtualLink(server)
    a = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    with caplog.at_level(logging.WARNING, logger="meshota.dtls"):
        connect(link, B, dc.PskClientConfig("node-b", KEY_B))
    assert client_failed(link, B)
    assert link.now < 1.0  # refused by an alert at once, not by a timeout
    assert next(e for e in link.server_events if isinstance(e, SessionRefused)).peer == B
    assert "session table full" in caplog.text
    assert server.session_count == 1
    roundtrip(link, A, a, b"a stays")


def test_idle_timeout_closes_the_session() -> None:
    server = psk_server(idle_timeout=30.0)
    link = VirtualLink(server)
    a = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    link.run(link.now + 20)
    roundtrip(link, A, a, b"keepalive")  # activity pushes the deadline
    link.run(link.now + 25)
    assert server.device_id(A) == "node-a"
    link.run(link.now + 10)
    closed = [e for e in link.server_events if isinstance(e, SessionClosed)]
    assert closed and closed[0].peer == A and "idle" in closed[0].reason
    assert server.session_count == 0
    with pytest.raises(NoSessionError):
        server.send(A, b"too late")


def test_client_close_notify_closes_the_server_session() -> None:
    link, a, _ = two_sessions()
    a.close()
    link.run(link.now + 1)
    closed = [e for e in link.server_events if isinstance(e, SessionClosed)]
    assert [(e.peer, e.device_id) for e in closed] == [(A, "node-a")]
    assert "close_notify" in closed[0].reason


def test_new_handshake_from_the_same_peer_replaces_the_session() -> None:
    link, _, b = two_sessions()
    link.clients.pop(A)
    again = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    assert established(link, A)
    roundtrip(link, A, again, b"second life")
    roundtrip(link, B, b, b"b unaffected")


def test_datagram_from_unknown_peer_that_is_not_a_client_hello_is_dropped() -> None:
    server = psk_server()
    server.receive_datagram(b"\x17\xfe\xfd" + bytes(30), ("192.0.2.1", 1), 0.0)
    server.receive_datagram(b"", ("192.0.2.1", 1), 0.0)
    assert server.datagrams_to_send() == [] and server.events() == []
    assert server.stats["dropped"] == 2


def test_encapsulated_peers_are_distinct_sessions() -> None:
    relay = ("10.0.0.254", 7000)
    link = VirtualLink(psk_server())
    pa, pb = (relay, b"\x00\x01"), (relay, b"\x00\x02")
    a = connect(link, pa, dc.PskClientConfig("node-a", KEY_A))
    b = connect(link, pb, dc.PskClientConfig("node-b", KEY_B))
    roundtrip(link, pa, a, b"via relay a")
    roundtrip(link, pb, b, b"via relay b")
    assert link.server.device_id(pa) == "node-a"  # type: ignore[attr-defined]


def test_server_retransmits_its_flight_on_now_then_gives_up_at_the_deadline() -> None:
    server = psk_server(handshake_timeout=30.0)
    link = VirtualLink(server)
    downs: list[float] = []

    def blackhole_after_cookie(direction: str, peer: Hashable, datagram: bytes) -> list[bytes]:
        if direction == "down" and datagram[13] != 3:  # let the HelloVerifyRequest through
            downs.append(link.now)
            return []
        return [datagram]

    link.tamper = blackhole_after_cookie
    link.add(A, dc.DtlsClient(dc.PskClientConfig("node-a", KEY_A)))
    link.run(40.0)
    # server flight 4 sent, then retransmitted at +1, +2, +4, +8, +16 s (client retries too)
    assert len(downs) >= 5
    failures = [e for e in link.server_events if isinstance(e, HandshakeFailed)]
    assert "not completed within 30 s" in failures[0].reason
    # the client still retries with a valid cookie, so a fresh attempt may be under way
    assert server.session_count <= 1


def test_garbage_never_raises_and_never_hurts_a_session() -> None:
    link, a, _ = two_sessions()
    rng = random.Random(1234)
    for i in range(400):
        body = rng.randbytes(rng.randrange(0, 200))
        if i % 2:  # plausible DTLS header, random content type/epoch/length
            body = bytes([rng.randrange(20, 26), 0xFE, 0xFD]) + body
        link.inject("up", A if i % 3 else ("192.0.2.7", i), body)
    link.run(link.now + 1)
    assert not [e for e in link.server_events if isinstance(e, SessionClosed | HandshakeFailed)]
    roundtrip(link, A, a, b"still here")


def test_an_oversized_write_is_refused_and_the_session_stays_up() -> None:
    """A write over one record's room under the MTU is a typed local error (mbedTLS refuses it
    before touching its state): nothing is sent, the session keeps working both ways."""
    server = psk_server()
    link = VirtualLink(server)
    client = connect(link, A, dc.PskClientConfig("node-a", KEY_A))
    assert established(link, A)
    with pytest.raises(dc.DatagramTooLarge, match="1200-byte MTU"):
        client.send(bytes(1300))
    assert client.datagrams_to_send() == [] and client.state is dc.ClientState.ESTABLISHED
    roundtrip(link, A, client, b"still here")
