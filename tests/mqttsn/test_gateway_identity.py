"""A session created under a verified identity is only ever resumed, woken or replaced by that
identity; keyless peers never use a client id a verified identity holds or has held; keyless
sessions are capped per source and overall; a sleeper woken at a new address keeps its broker
connection (sans-I/O, the in-memory broker)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttsn import (
    BrokerPublish,
    ClientDisconnected,
    ClientLost,
    Connack,
    Connect,
    Disconnect,
    ForwardedPeer,
    Gateway,
    GatewayConfig,
    Packet,
    Pingreq,
    Puback,
    Publish,
    Register,
    ReturnCode,
    SessionConn,
    SessionState,
    Subscribe,
    TopicIdType,
    WillMsg,
    WillTopic,
    decode,
    encode,
)
from mqttsn.testing import MemoryBroker


@dataclass(frozen=True)
class Secure:
    """A peer key of a verified transport (what the DTLS listener hands the Gateway)."""

    link: int


VICTIM = "node-v"


class Rig:
    def __init__(self, **cfg: object) -> None:
        self.gw = Gateway(GatewayConfig(**cfg))  # type: ignore[arg-type]
        self.broker = MemoryBroker()
        self.now = 0.0
        self.out: list[tuple[Hashable, Packet]] = []
        self.events: list[object] = []

    def send(self, peer: Hashable, pkt: Packet, identity: str | None = None) -> list[Packet]:
        self.gw.receive_datagram(encode(pkt), peer, self.now, identity=identity)
        return self.flush(peer)

    def flush(self, peer: Hashable | None = None) -> list[Packet]:
        self.broker.process(self.gw, self.now)
        self.events.extend(self.gw.events())
        got = [(p, decode(d)) for p, d in self.gw.datagrams_to_send()]
        self.out.extend(got)
        return [pkt for p, pkt in got if peer is None or p == peer]

    def secure_sleeper(self, peer: Hashable = Secure(1), buffered: int = 2) -> int:
        """The victim: connected over a verified transport, subscribed, asleep with messages."""
        assert self.send(peer, Connect(VICTIM, 60, clean_session=False), VICTIM) == [Connack()]
        (_suback,) = self.send(peer, Subscribe(1, f"fw/{VICTIM}/cmd", 1), VICTIM)
        assert self.send(peer, Disconnect(300), VICTIM) == [Disconnect()]
        for i in range(buffered):
            self.broker.route(self.gw, f"fw/{VICTIM}/cmd", f"SECRET-{i}".encode(), 1, self.now)
        self.flush()
        s = self.gw.session(peer)
        assert s is not None and s.state == SessionState.ASLEEP and len(s.sleep_buffer) == buffered
        return 0


def secret_leaked(rig: Rig, secure_peers: tuple[Hashable, ...] = (Secure(1),)) -> bool:
    return any(
        isinstance(pkt, Publish) and b"SECRET" in pkt.data and peer not in secure_peers
        for peer, pkt in rig.out
    )


@pytest.fixture(params=["transparent", "aggregating"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_keyless_pingreq_of_a_verified_sleeper_gets_nothing(mode: str) -> None:
    rig = Rig(mode=mode)
    rig.secure_sleeper()
    attacker = ("10.6.6.6", 666)
    assert rig.send(attacker, Pingreq(VICTIM)) == [Disconnect()]
    assert not secret_leaked(rig)
    s = rig.gw.session(Secure(1))
    assert s is not None and s.state == SessionState.ASLEEP and len(s.sleep_buffer) == 2
    # the owner wakes it (at a new verified link too) and gets everything
    out = rig.send(Secure(2), Pingreq(VICTIM), VICTIM)
    assert [p.data for p in out if isinstance(p, Publish)] == [b"SECRET-0"]


def test_keyless_connect_with_a_verified_id_is_refused_and_ends_nothing(mode: str) -> None:
    rig = Rig(mode=mode)
    rig.secure_sleeper()
    attacker = ForwardedPeer(("10.6.6.6", 666), b"\x01")
    for clean in (True, False):
        (ack,) = rig.send(attacker, Connect(VICTIM, 60, clean_session=clean))
        assert ack == Connack(ReturnCode.NOT_SUPPORTED)
    assert rig.gw.session(attacker) is None
    assert not [e for e in rig.events if isinstance(e, ClientDisconnected | ClientLost)]
    s = rig.gw.session(Secure(1))
    assert s is not None and len(s.sleep_buffer) == 2


def test_an_id_once_verified_stays_refused_to_keyless_peers_after_the_session_ends() -> None:
    rig = Rig()
    assert rig.send(Secure(1), Connect(VICTIM, 60), VICTIM) == [Connack()]
    assert rig.send(Secure(1), Disconnect(), VICTIM) == [Disconnect()]
    assert rig.gw.session(Secure(1)) is None
    assert rig.send(("10.6.6.6", 1), Connect(VICTIM, 60)) == [Connack(ReturnCode.NOT_SUPPORTED)]
    # other ids are fine over plain UDP
    assert rig.send(("10.6.6.6", 1), Connect("plain-1", 60)) == [Connack()]


def test_remembered_verified_ids_are_capped_oldest_first() -> None:
    rig = Rig(max_remembered_verified_ids=2)
    for i in range(3):
        assert rig.send(Secure(i), Connect(f"n{i}", 60), f"n{i}") == [Connack()]
        rig.send(Secure(i), Disconnect(), f"n{i}")
    assert rig.send(("10.0.0.1", 1), Connect("n0", 60)) == [Connack()]  # forgotten
    assert rig.send(("10.0.0.2", 1), Connect("n2", 60)) == [Connack(ReturnCode.NOT_SUPPORTED)]


def test_protected_client_ids_need_a_key() -> None:
    rig = Rig(protected_client_id=lambda cid: cid.startswith("node-"))
    assert rig.send(("10.0.0.1", 1), Connect("node-7", 60)) == [Connack(ReturnCode.NOT_SUPPORTED)]
    assert rig.send(Secure(7), Connect("node-7", 60), "node-7") == [Connack()]
    assert rig.send(("10.0.0.1", 1), Connect("sensor-7", 60)) == [Connack()]


def test_verified_identity_replaces_a_keyless_session_of_its_id() -> None:
    rig = Rig()
    squatter = ("10.6.6.6", 1)
    assert rig.send(squatter, Connect(VICTIM, 60, clean_session=False)) == [Connack()]
    assert rig.send(Secure(1), Connect(VICTIM, 60, clean_session=False), VICTIM) == [Connack()]
    assert rig.gw.session(squatter) is None
    s = rig.gw.session(Secure(1))
    assert s is not None and s.identity == VICTIM


def test_a_datagram_without_the_session_identity_is_dropped() -> None:
    rig = Rig()
    rig.secure_sleeper()
    # a driver bug or a confused peer key: same peer, no identity
    assert rig.send(Secure(1), Pingreq(VICTIM)) == []
    s = rig.gw.session(Secure(1))
    assert s is not None and s.state == SessionState.ASLEEP


def test_a_session_of_another_identity_cannot_be_woken() -> None:
    rig = Rig()
    rig.secure_sleeper()
    assert rig.send(Secure(9), Pingreq(VICTIM), "node-w") == [Disconnect()]
    assert not secret_leaked(rig)


def test_sleeper_woken_at_a_new_address_keeps_its_broker_connection(mode: str) -> None:
    """The broker connection is keyed by the session, not by its current address: broker -> node
    messages and PUBACKs keep flowing after a wake-up elsewhere."""
    rig = Rig(mode=mode)
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    assert rig.send(a, Connect("sleepy", 60, clean_session=False)) == [Connack()]
    (_suback,) = rig.send(a, Subscribe(1, "down/1", 1))
    (reg,) = rig.send(a, Register(0, 2, "up/x"))
    tid = reg.topic_id  # type: ignore[attr-defined]
    assert rig.send(a, Disconnect(100)) == [Disconnect()]
    rig.broker.route(rig.gw, "down/1", b"while-asleep", 1, rig.now)
    (woke, *_) = rig.send(b, Pingreq("sleepy"))
    assert isinstance(woke, Publish) and woke.data == b"while-asleep"
    rig.send(b, Puback(woke.topic_id, woke.msg_id))
    assert rig.send(b, Connect("sleepy", 60, clean_session=False)) == [Connack()]
    # a QoS 1 publish from the new address is acked once the broker confirmed it ...
    assert rig.send(b, Publish(tid, b"up", 1, 7)) == [Puback(tid, 7)]
    (rec,) = [r for r in rig.broker.published if r.topic == "up/x"]
    if mode == "transparent":
        assert rec.conn == a and a in rig.broker.connections  # the session's own connection
    # ... and the broker's messages reach it at the new address
    rig.broker.route(rig.gw, "down/1", b"hello", 1, rig.now)
    got = rig.flush()
    assert [(p, m.data) for p, m in rig.out[-len(got) :] if isinstance(m, Publish)] == [(b, b"hello")]


def test_new_session_at_the_address_a_sleeper_left_gets_its_own_broker_connection() -> None:
    rig = Rig()
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    rig.send(a, Connect("sleepy", 60))
    rig.send(a, Disconnect(100))
    rig.send(b, Pingreq("sleepy"))
    assert rig.send(a, Connect("newcomer", 60)) == [Connack()]
    s_new, s_old = rig.gw.session(a), rig.gw.session(b)
    assert s_new is not None and s_old is not None
    assert isinstance(s_new.conn, SessionConn) and s_old.conn == a
    assert set(rig.broker.connections) == {a, s_new.conn}


def test_keyless_sessions_capped_per_source_and_overall() -> None:
    rig = Rig(max_unverified_per_source=2, max_unverified_sessions=3)
    assert rig.send(("10.0.0.1", 1), Connect("a1", 60)) == [Connack()]
    assert rig.send(ForwardedPeer(("10.0.0.1", 9), b"\x05"), Connect("a2", 60)) == [Connack()]
    assert rig.send(("10.0.0.1", 3), Connect("a3", 60)) == [Connack(ReturnCode.CONGESTION)]
    assert rig.send(("10.0.0.2", 1), Connect("b1", 60)) == [Connack()]
    assert rig.send(("10.0.0.3", 1), Connect("c1", 60)) == [Connack(ReturnCode.CONGESTION)]
    connects = len(rig.broker.connections)
    # verified peers are not counted against keyless caps
    assert rig.send(Secure(1), Connect("node-1", 60), "node-1") == [Connack()]
    assert len(rig.broker.connections) == connects + 1
    # a closed session frees its slot
    rig.send(("10.0.0.1", 1), Disconnect())
    rig.now += 1
    assert rig.send(("10.0.0.3", 1), Connect("c1", 60)) == [Connack()]
    assert rig.gw.stats["unverified_refused"] == 2


def test_keyless_session_churn_is_rate_limited_per_source_and_overall() -> None:
    """New client id after new client id at one address: each closes the last session and opens
    a broker connection; past the burst only `rate` per second get through."""
    rig = Rig(max_unverified_per_source=4, unverified_connect_rate_per_source=2.0,
              unverified_connect_rate=3.0, max_unverified_sessions=6)  # fmt: skip
    a = ("10.0.0.1", 1)
    codes = [rig.send(a, Connect(f"churn-{i}", 60))[0] for i in range(10)]
    assert codes.count(Connack()) == 4  # the burst
    rig.now += 1.0
    codes = [rig.send(a, Connect(f"later-{i}", 60))[0] for i in range(10)]
    assert codes.count(Connack()) == 2  # 2 per second per source
    # many sources: the overall burst and cap bound them
    rig.now += 10.0
    got = sum(rig.send((f"10.1.0.{i}", 1), Connect(f"x{i}", 60)) == [Connack()] for i in range(20))
    assert got == 6  # the overall cap (10.0.0.1's refused CONNECTs ended its own session)
    rig.now += 1.0
    got = sum(rig.send((f"10.2.0.{i}", 1), Connect(f"y{i}", 60)) == [Connack()] for i in range(20))
    assert got == 0  # the table is full: caps hold whatever the rate
    for i in range(6):
        rig.send((f"10.1.0.{i}", 1), Disconnect())
    rig.now += 0.5
    got = sum(rig.send((f"10.3.0.{i}", 1), Connect(f"z{i}", 60)) == [Connack()] for i in range(20))
    assert got == 4  # 3 per second overall, 1.5 s after the overall bucket ran dry


_peers = st.sampled_from(
    [("10.6.6.6", 1), ("10.6.6.6", 2), ("10.7.7.7", 1), ForwardedPeer(("10.6.6.6", 1), b"\x01")]
)
_attack = st.one_of(
    st.builds(Connect, st.sampled_from([VICTIM, "evil"]), st.integers(0, 60), st.booleans(), st.booleans()),
    st.builds(Pingreq, st.sampled_from([VICTIM, None])),
    st.builds(Disconnect, st.sampled_from([None, 0, 30])),
    st.builds(WillTopic, st.sampled_from(["", "w/t"])),
    st.builds(WillMsg, st.just(b"w")),
    st.builds(
        Publish,
        st.integers(1, 3),
        st.just(b"x"),
        st.sampled_from([-1, 0, 1]),
        st.integers(1, 9),
        topic_id_type=st.sampled_from([TopicIdType.PREDEFINED, TopicIdType.SHORT]),
    ),
    st.builds(Publish, st.integers(1, 3), st.just(b"x"), st.sampled_from([0, 1]), st.integers(1, 9)),
    st.builds(Register, st.just(0), st.integers(1, 9), st.just(f"fw/{VICTIM}/cmd")),
    st.builds(Subscribe, st.integers(1, 9), st.sampled_from([f"fw/{VICTIM}/#", "#"]), st.just(1)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["transparent", "aggregating"]),
    attacks=st.lists(st.tuples(_peers, _attack), max_size=25),
)
def test_no_keyless_sequence_reaches_a_verified_session(
    mode: str, attacks: list[tuple[Hashable, Packet]]
) -> None:
    rig = Rig(mode=mode)
    rig.secure_sleeper()
    for peer, pkt in attacks:
        rig.send(peer, pkt)
        rig.now += 1
    assert not secret_leaked(rig)
    s = rig.gw.session(Secure(1))
    assert s is not None and s.identity == VICTIM and len(s.sleep_buffer) == 2
    ended = [e for e in rig.events if isinstance(e, ClientDisconnected | ClientLost)]
    assert not [e for e in ended if e.client_id == VICTIM]
    assert all(x.client_id != VICTIM for x in rig.gw.sessions() if x is not s)
    out = rig.send(Secure(3), Pingreq(VICTIM), VICTIM)
    assert [p.data for p in out if isinstance(p, Publish)] == [b"SECRET-0"]


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.booleans()), max_size=60))
def test_keyless_counts_match_the_session_table(ops: list[tuple[int, int, bool]]) -> None:
    rig = Rig(max_unverified_per_source=3, max_unverified_sessions=7)
    for host, port, connect in ops:
        peer = (f"10.0.0.{host}", port)
        if connect:
            rig.send(peer, Connect(f"c{host}-{port}-{rig.now}", 60))
        else:
            rig.send(peer, Disconnect(30 if port % 2 else None))
        rig.now += 1
        sessions = rig.gw.sessions()
        assert len(sessions) <= 7
        per_host: dict[str, int] = {}
        for s in sessions:
            per_host[s.peer[0]] = per_host.get(s.peer[0], 0) + 1  # type: ignore[index]
        assert max(per_host.values(), default=0) <= 3
        assert rig.gw.admission.unverified == len(sessions)
        for s in sessions:
            assert rig.gw.admission.per_source(s.peer) == per_host[s.peer[0]]  # type: ignore[index]


def test_broker_publish_of_a_woken_verified_sleeper_stays_stamped() -> None:
    rig = Rig()
    rig.secure_sleeper(buffered=0)
    rig.send(Secure(2), Pingreq(VICTIM), VICTIM)
    rig.send(Secure(2), Connect(VICTIM, 60, clean_session=False), VICTIM)
    (reg,) = rig.send(Secure(2), Register(0, 5, f"dev/{VICTIM}/s"), VICTIM)
    rig.gw.receive_datagram(
        encode(Publish(reg.topic_id, b"up", 1, 6)),
        Secure(2),
        rig.now,  # type: ignore[attr-defined]
        identity=VICTIM,
    )
    actions = rig.gw.broker_actions()
    (pub,) = [a for a in actions if isinstance(a, BrokerPublish)]
    assert (pub.device, pub.verified, pub.conn) == (VICTIM, True, Secure(1))
