"""DtlsClient on its own and the mbedTLS glue (virtual-clock timers, record framing)."""

from __future__ import annotations

import pytest

from firmware_proto import dtls_client as dc
from wire.mbedtls_glue import Clock, RetransmitTimer, split_records

KEY = bytes(16)


def test_client_retransmits_on_now_and_gives_up() -> None:
    client = dc.DtlsClient(dc.PskClientConfig("n", KEY), handshake_timeout_max=8.0)
    client.start(100.0)
    assert len(client.datagrams_to_send()) == 1
    sent_at = [100.0]
    while (t := client.get_timer()) is not None:
        client.handle_timer(t)
        if client.datagrams_to_send():
            sent_at.append(t)
    # mbedTLS back-off on our clock: 1, 2, 4, 8 s, then failure (no wall-clock time passed)
    assert sent_at == [100.0, 101.0, 103.0, 107.0]
    (event,) = client.events()
    assert isinstance(event, dc.HandshakeFailed) and "timed out" in event.reason
    assert client.state is dc.ClientState.CLOSED


def test_timer_does_not_fire_before_its_time() -> None:
    client = dc.DtlsClient(dc.PskClientConfig("n", KEY))
    client.start(0.0)
    client.datagrams_to_send()
    client.handle_timer(0.999)
    assert client.datagrams_to_send() == []
    client.handle_timer(1.0)
    assert len(client.datagrams_to_send()) == 1


def test_send_before_handshake_is_a_local_error() -> None:
    client = dc.DtlsClient(dc.PskClientConfig("n", KEY))
    with pytest.raises(dc.DtlsClientError):
        client.send(b"x")
    client.start(0.0)
    with pytest.raises(dc.DtlsClientError):
        client.send(b"x")
    with pytest.raises(dc.DtlsClientError):
        client.start(0.0)


def test_garbage_from_the_network_is_ignored() -> None:
    client = dc.DtlsClient(dc.PskClientConfig("n", KEY))
    client.start(0.0)
    client.datagrams_to_send()
    for junk in (b"", b"\x00", b"\x16\xfe\xfd" + bytes(40), bytes(range(256))):
        client.receive_datagram(junk, 0.5)
    assert client.state is dc.ClientState.HANDSHAKING
    assert client.events() == []


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        dc.PskClientConfig("", KEY)
    with pytest.raises(ValueError):
        dc.PskClientConfig("n", bytes(33))


def test_retransmit_timer_states() -> None:
    clock = Clock(10.0)
    seen: list[float | None] = []
    timer = RetransmitTimer(clock, seen.append)
    assert timer.state() == -1
    timer.set(250, 1000)
    assert seen == [11.0] and timer.state() == 0
    clock.now = 10.25
    assert timer.state() == 1
    clock.now = 11.0
    assert timer.state() == 2
    timer.set(0, 0)
    assert timer.state() == -1 and seen[-1] is None


def test_split_records() -> None:
    r1 = b"\x16\xfe\xfd" + bytes(8) + b"\x00\x02" + b"ab"
    r2 = b"\x17\xfe\xfd" + bytes(8) + b"\x00\x01" + b"c"
    assert split_records(r1 + r2) == [r1, r2]
    assert split_records(r1 + b"\x17\xfe") == [r1, b"\x17\xfe"]
