"""Organisations' topics (wire/tenant_topics.py): golden mappings, round trips and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.dtls_credentials import CredentialsError, parse_psk_tenants, parse_psk_text
from wire.envelope import BULK_TOPIC, request_topic, response_topic
from wire.tenant_topics import (
    DEFAULT_TENANT,
    TenantTopicError,
    check_tenant,
    is_tenant_topic,
    split_tenant_topic,
    tenant_topic,
)

ORG = "5f0c2a7e-4b8e-4c1e-9d3a-0b6f1c2d3e4f"
tenants = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True).filter(
    lambda t: t not in (DEFAULT_TENANT, ".", "..")
)
levels = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/+#"), min_size=1
)
api_paths = st.lists(levels, min_size=1, max_size=5).map(lambda parts: "/api/" + "/".join(parts))
node_topics = st.one_of(
    api_paths.map(request_topic),
    st.just(BULK_TOPIC),
    st.tuples(levels, levels).map(lambda dr: response_topic(*dr)),
)


def test_golden() -> None:
    assert tenant_topic("/mender/api/devices/v1/deployments/device/deployments/next", ORG) == (
        f"/mender/t/{ORG}/api/devices/v1/deployments/device/deployments/next"
    )
    assert tenant_topic("/mender/bulk/v1", ORG) == f"/mender/t/{ORG}/bulk/v1"
    assert tenant_topic("/mender/responses/node-7/3", ORG) == f"/mender/t/{ORG}/responses/node-7/3"
    assert tenant_topic("/mender/responses/node-7/#", ORG) == f"/mender/t/{ORG}/responses/node-7/#"
    # the default organisation and topics outside the device API stay as they are
    assert (
        tenant_topic("/mender/api/x", DEFAULT_TENANT)
        == tenant_topic("/mender/api/x", None)
        == "/mender/api/x"
    )
    for other in ("meshota/announce", "/mender/bulk/v2", "/mender/#", "/mender/other/x", "sn"):
        assert tenant_topic(other, ORG) == other
    assert split_tenant_topic("/mender/api/x") == (DEFAULT_TENANT, "/mender/api/x")
    assert split_tenant_topic(f"/mender/t/{ORG}/bulk/v1") == (ORG, BULK_TOPIC)
    # one spelling per topic: no /mender/t/default/..., no other subtree, no bad id
    bad_topics = (
        "/mender/t/default/api/x",
        f"/mender/t/{ORG}/other/x",
        f"/mender/t/{ORG}",
        "/mender/t/",
        "/mender/t/a+b/api/x",
        "/mender/t//api/x",
        f"/mender/t/{ORG}/bulk/v2",
        "/mender/t/../api/x",
    )
    for bad in bad_topics:
        assert split_tenant_topic(bad) is None, bad
    assert is_tenant_topic("/mender/t/x/api") and is_tenant_topic("/mender/t")
    assert not is_tenant_topic("/mender/tx/api") and not is_tenant_topic("/mender/api/t/x")


@given(node_topics, tenants)
def test_round_trip(topic: str, tenant: str) -> None:
    moved = tenant_topic(topic, tenant)
    assert is_tenant_topic(moved) and moved.endswith(topic.removeprefix("/mender"))
    assert split_tenant_topic(moved) == (tenant, topic)
    assert split_tenant_topic(topic) == (DEFAULT_TENANT, topic)
    assert tenant_topic(topic, DEFAULT_TENANT) == topic


@given(st.text(max_size=80))
def test_garbage_topics(topic: str) -> None:
    split = split_tenant_topic(topic)  # never raises
    if split is not None and is_tenant_topic(topic):
        tenant, visible = split
        assert check_tenant(tenant) == tenant and tenant_topic(visible, tenant) == topic
    assert split_tenant_topic("/mender/t/" + topic) is None or "/" in topic


@given(st.text(max_size=80))
def test_check_tenant_is_one_safe_level(tenant: str) -> None:
    try:
        check_tenant(tenant)
    except TenantTopicError:
        return
    assert not set(tenant) & set("/+#$:, \x00%") and tenant not in (DEFAULT_TENANT, "", ".", "..")


def test_psk_file_names_the_organisation() -> None:
    text = f"node-1,00ff\nnode-2,0011,{ORG}\nnode-3,0022,default  # the default one, spelled out\n"
    assert parse_psk_text(text) == {"node-1": b"\x00\xff", "node-2": b"\x00\x11", "node-3": b"\x00\x22"}
    assert parse_psk_tenants(text) == {"node-2": ORG}
    with pytest.raises(CredentialsError, match="psk:1: bad organisation id 'a/b'"):
        parse_psk_tenants("node-1,00,a/b\n", "psk")
