"""Aggregating mode's topic -> filter index answers exactly what matching every filter would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttsn import Gateway, GatewayConfig, topic_matches

_level = st.sampled_from(["", "a", "b", "mender", "responses", "$SYS", "dev-1"])
_filter_level = st.one_of(_level, st.just("+"))
_topics = st.lists(_level, min_size=1, max_size=5).map("/".join)
_filters = st.tuples(st.lists(_filter_level, min_size=0, max_size=4), st.booleans()).map(
    lambda t: "/".join([*t[0], "#"]) if t[1] else "/".join(t[0]) or "a"
)


@settings(max_examples=200, deadline=None)
@given(
    subs=st.lists(st.tuples(st.integers(0, 5), _filters), max_size=30),
    gone=st.lists(st.integers(0, 29), max_size=10),
    topics=st.lists(_topics, min_size=1, max_size=10),
)
def test_index_matches_like_a_linear_scan(
    subs: list[tuple[int, str]], gone: list[int], topics: list[str]
) -> None:
    gw = Gateway(GatewayConfig(mode="aggregating"))
    for key, name in subs:
        gw._agg_add(("node", key), name, 1, None)
    for i in gone:
        if i < len(subs):
            gw._agg_release(("node", subs[i][0]), subs[i][1])
    for topic in topics:
        expected = sorted(name for name in gw._agg_subs if topic_matches(name, topic))
        assert sorted(gw._agg_matching(topic)) == expected


def test_lookup_cost_does_not_grow_with_the_number_of_nodes() -> None:
    """10,000 nodes each on /mender/responses/<id>/#: a reply touches one bucket per level."""
    gw = Gateway(GatewayConfig(mode="aggregating"))
    for i in range(10_000):
        gw._agg_add(("node", i), f"/mender/responses/node-{i}/#", 1, None)
    assert gw._agg_matching("/mender/responses/node-4242/7") == ["/mender/responses/node-4242/#"]
    assert max(len(names) for names in gw._agg_index.values()) == 1
