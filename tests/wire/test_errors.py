"""One root for the wire decoders' errors; the envelope error carries the request id it read."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_proto.sealed_uplink import UplinkFrameError
from wire.chunk_map import ChunkMapError
from wire.dtls_credentials import CredentialsError
from wire.envelope import MAX_REQUEST_ID, BulkRequest, EnvelopeError, RequestEnvelope
from wire.errors import WireError
from wire.frames import FrameError, decode
from wire.sealed import SealedRecordError, decode_reply


@pytest.mark.parametrize(
    "cls",
    [
        FrameError,
        EnvelopeError,
        SealedRecordError,
        UplinkFrameError,
        ChunkMapError,
        CredentialsError,
    ],
)
def test_every_decoder_error_is_a_wire_error_and_a_value_error(cls: type[Exception]) -> None:
    assert issubclass(cls, WireError)
    assert issubclass(cls, ValueError)  # every `except ValueError` around a decoder keeps working


def test_decoders_raise_it() -> None:
    with pytest.raises(WireError):
        decode(b"\x00")
    with pytest.raises(WireError):
        decode_reply(b"\xc1")
    with pytest.raises(WireError):
        RequestEnvelope.decode(b"\xc1")


_RID = st.text(
    st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda s: not s.startswith("$") and len(s) <= MAX_REQUEST_ID)
_BAD_FIELDS = st.sampled_from(
    [
        {"m": "FETCH"},
        {"m": 3},
        {"m": "GET", "t": 1},
        {"m": "GET", "c": b"x"},
        {"m": "GET", "b": 1},
        {"m": "GET", "q": [1]},
        {"m": "GET", "q": {"a": 1}},
        {"m": "GET", "h": {"a": 1}},
        {"m": "GET", "n": -1},
        {"m": "GET", "n": True},
    ]
)


@given(rid=_RID, bad=_BAD_FIELDS)
def test_envelope_error_carries_the_request_id_once_read(rid: str, bad: dict[str, object]) -> None:
    payload = msgpack.packb({"i": rid, **bad}, use_bin_type=True)
    with pytest.raises(EnvelopeError) as info:
        RequestEnvelope.decode(payload)
    assert info.value.request_id == rid


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # not msgpack
        msgpack.packb([1, 2]),  # not a map
        msgpack.packb({1: 2, "i": "r1", "m": "GET"}),  # non-string key: refused before the id is read
        msgpack.packb({"m": "GET"}),  # no id
        msgpack.packb({"i": "a/b", "m": "GET"}),  # id is not one topic level
        msgpack.packb({"i": "x" * (MAX_REQUEST_ID + 1), "m": "GET"}),
    ],
)
def test_envelope_error_without_a_readable_request_id(payload: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        RequestEnvelope.decode(payload)
    assert info.value.request_id is None


def test_bulk_request_error_carries_the_batch_id() -> None:
    with pytest.raises(EnvelopeError) as info:
        BulkRequest.decode(msgpack.packb({"i": "b1", "r": [b"x"] * 3}), max_records=2)
    assert info.value.request_id == "b1"
    with pytest.raises(EnvelopeError) as info:
        BulkRequest.decode(msgpack.packb({"i": "b2", "r": "no"}))
    assert info.value.request_id == "b2"
