"""wire/mesh_report.py: a root's stream progress record — golden bytes, round trips, garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.errors import WireError
from wire.mesh_report import (
    FINAL,
    FINAL_COMPLETE,
    MAX_NODES,
    MAX_RECORD,
    MeshNode,
    MeshReport,
    MeshReportError,
    decode_mesh_report,
    encode_mesh_report,
)

_ID_CHARS = "0123456789abcdefABCDEF._:-"
ids = st.text(_ID_CHARS, min_size=1, max_size=64)
names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=32)


@st.composite
def reports(draw: st.DrawFn) -> MeshReport:
    listed = draw(st.lists(ids, max_size=MAX_NODES, unique=True))
    nodes = tuple(MeshNode(i, draw(st.integers(0, 3)), draw(st.integers(0, 2**32 - 1))) for i in listed)
    return MeshReport(
        draw(st.binary(min_size=8, max_size=8)),
        draw(ids),
        draw(names),
        draw(st.sampled_from([0, FINAL, FINAL | FINAL_COMPLETE])),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(len(nodes), 0xFFFF)),
        nodes,
    )


GOLDEN = MeshReport(
    bytes.fromhex("0011223344556677"), "a2", "v2", FINAL | FINAL_COMPLETE, 3, 70, 40000, 90, 2,
    (MeshNode("node-1", 0, 5), MeshNode("node-2", 1, 0)),
)  # fmt: skip
GOLDEN_HEX = (
    "4d01" "0011223344556677" "03" "0003" "00000046" "00009c40" "0000005a" "0002"
    "026132" "027632" "02" "066e6f64652d31" "00" "00000005" "066e6f64652d32" "01" "00000000"
)  # fmt: skip


def test_golden_bytes() -> None:
    assert encode_mesh_report(GOLDEN).hex() == GOLDEN_HEX
    assert decode_mesh_report(bytes.fromhex(GOLDEN_HEX)) == GOLDEN
    assert GOLDEN.final and GOLDEN.complete


@settings(max_examples=150, deadline=None)
@given(reports())
def test_round_trip(rep: MeshReport) -> None:
    data = encode_mesh_report(rep)
    assert len(data) <= MAX_RECORD
    assert decode_mesh_report(data) == rep


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_is_a_typed_error(data: bytes) -> None:
    try:
        rep = decode_mesh_report(data)
    except MeshReportError as exc:
        assert isinstance(exc, WireError) and str(exc)
    else:
        assert encode_mesh_report(rep) == data


@settings(max_examples=200, deadline=None)
@given(reports(), st.data())
def test_cut_or_flipped_records_never_crash(rep: MeshReport, data: st.DataObject) -> None:
    raw = bytearray(encode_mesh_report(rep))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MeshReportError):
        decode_mesh_report(bytes(raw[:cut]))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(MeshReportError):
        decode_mesh_report(bytes(raw))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stream_id": b"short"}, "stream id"),
        ({"artifact_id": "has space"}, "artifact id"),
        ({"artifact_name": "bad\nname"}, "artifact name"),
        ({"flags": FINAL_COMPLETE}, "flags"),
        ({"members": 1}, "nodes listed"),
        ({"nodes": (MeshNode("x", 0, 1), MeshNode("x", 1, 0))}, "twice"),
        ({"nodes": (MeshNode("x", 9, 1),), "members": 1}, "state"),
        ({"nodes": (MeshNode("<script>", 0, 1),), "members": 1}, "device id"),
        ({"bytes_on_air": 2**32}, "bytes on air"),
    ],
)
def test_encoder_refuses_what_the_decoder_would(change: dict[str, object], message: str) -> None:
    import dataclasses

    with pytest.raises(MeshReportError, match=message):
        encode_mesh_report(dataclasses.replace(GOLDEN, **change))  # type: ignore[arg-type]


def test_too_many_nodes_and_wrong_magic() -> None:
    raw = bytearray(bytes.fromhex(GOLDEN_HEX))
    raw[0] = 0x43
    with pytest.raises(MeshReportError, match="not a version 1"):
        decode_mesh_report(bytes(raw))
    many = tuple(MeshNode(f"n{i}", 0, 1) for i in range(MAX_NODES + 1))
    with pytest.raises(MeshReportError, match="nodes listed"):
        encode_mesh_report(MeshReport(b"\0" * 8, "a", "b", 0, 0, 1, 0, 0, 1000, many))
    with pytest.raises(MeshReportError, match="bytes"):
        decode_mesh_report(b"\0" * (MAX_RECORD + 1))
