"""Property: whatever a hostile peer sends, the gateway never raises and a well-behaved client
on another address keeps working.

The hostile peer does not use the good client's id: over plain UDP a CONNECT with a known client id
from a new address legitimately takes the session over (as in the reference gateway); binding ids to
authenticated identities is the DTLS layer's job (identity= on receive_datagram).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttsn import (
    GATEWAY_CONN,
    Connack,
    Connect,
    Disconnect,
    Gateway,
    GatewayConfig,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Pubrel,
    Regack,
    Register,
    SearchGw,
    Subscribe,
    TopicIdType,
    WillMsg,
    WillTopic,
    decode,
    encode,
)
from mqttsn.testing import MemoryBroker

GOOD = ("10.9.9.9", 9)
EVIL = ("10.6.6.6", 6)

valid_packets = st.one_of(
    st.builds(
        Connect,
        st.sampled_from(["evil", "other", "x" * 23]),
        st.integers(0, 65535),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        Register, st.integers(0, 65535), st.integers(0, 65535), st.sampled_from(["a", "b/c", "good/t"])
    ),
    st.builds(Regack, st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 3)),
    st.builds(
        Publish,
        st.integers(0, 65535),
        st.binary(max_size=40),
        st.sampled_from([0, 1, 2]),
        st.integers(0, 65535),
        st.booleans(),
        st.booleans(),
        st.sampled_from([TopicIdType.NORMAL, TopicIdType.PREDEFINED, TopicIdType.SHORT]),
    ),
    st.builds(Puback, st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 3)),
    st.builds(Pubrel, st.integers(0, 65535)),
    st.builds(
        Subscribe,
        st.integers(0, 65535),
        st.sampled_from(["#", "a/+", "good/#", "+/x"]),
        st.sampled_from([0, 1, 2]),
    ),
    st.builds(Pingreq, st.sampled_from([None, "other", "evil"])),
    st.builds(Disconnect, st.sampled_from([None, 0, 5, 3600])),
    st.builds(WillTopic, st.just("w/t"), st.sampled_from([0, 1, 2])),
    st.just(WillTopic()),
    st.builds(WillMsg, st.binary(max_size=10)),
    st.builds(SearchGw, st.integers(0, 255)),
)
datagrams = st.one_of(valid_packets.map(encode), st.binary(max_size=64))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["transparent", "aggregating"]),
    attack=st.lists(st.tuples(datagrams, st.floats(0, 30)), max_size=40),
)
def test_hostile_peer_never_breaks_gateway_or_other_session(
    mode: str, attack: list[tuple[bytes, float]]
) -> None:
    gw = Gateway(GatewayConfig(mode=mode))  # type: ignore[arg-type]
    broker = MemoryBroker()
    now = 0.0

    def good(pkt: object) -> list[object]:
        gw.receive_datagram(encode(pkt), GOOD, now)  # type: ignore[arg-type]
        broker.process(gw, now)
        return [decode(d) for p, d in gw.datagrams_to_send() if p == GOOD]

    assert good(Connect("good", 3600)) == [Connack()]
    (reg,) = good(Register(0, 1, "good/t"))
    assert isinstance(reg, Regack)
    for data, dt in attack:
        now += dt
        gw.receive_datagram(data, EVIL, now)
        broker.process(gw, now)
        gw.handle_timer(now)
        broker.process(gw, now)
        gw.datagrams_to_send()
        gw.events()
    # the good client is untouched: same session, same topic id, publishes still go through
    assert good(Pingreq()) == [Pingresp()]
    assert good(Publish(reg.topic_id, b"still here", 1, 77)) == [Puback(reg.topic_id, 77)]
    assert broker.messages("good/t")[-1].payload == b"still here"
    assert broker.messages("good/t")[-1].conn == (GOOD if mode == "transparent" else GATEWAY_CONN)
