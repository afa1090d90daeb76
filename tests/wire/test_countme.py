"""wire/countme.py: window alignment, age buckets, count records (golden vector), suppression."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wire
from wire.countme import (
    ACK_COUNTED,
    ACK_REFUSED,
    COUNTME_EPOCH,
    WEEK,
    CountRecord,
    CountRecordError,
    ack_frame,
    age_bucket,
    count_bucket,
    decode_count_record,
    encode_count_record,
    parse_ack,
    report_frame,
    suppress,
    window_of,
    window_start,
)

VECTORS = Path(wire.__file__).resolve().parent / "vectors" / "countme.json"


def test_windows_start_on_monday_1970_01_05_utc() -> None:
    epoch = datetime.datetime.fromtimestamp(COUNTME_EPOCH, datetime.UTC)
    assert (epoch.year, epoch.month, epoch.day, epoch.hour, epoch.weekday()) == (1970, 1, 5, 0, 0)
    for w in (-1, 0, 1, 2917, 2950):
        start = window_start(w)
        assert window_of(start) == w and window_of(start - 1) == w - 1 and window_of(start + WEEK - 1) == w
        assert datetime.datetime.fromtimestamp(start, datetime.UTC).weekday() == 0
    # 2026-11-30 (a Monday) 00:00 UTC starts a window, the Sunday before ends the previous one
    monday = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC).timestamp()
    assert window_start(window_of(monday)) == monday


def test_age_buckets_follow_libdnf_thresholds() -> None:
    buckets = [age_bucket(100, 100 + weeks) for weeks in range(30)]
    assert buckets[0] == 1 and set(buckets[1:4]) == {2} and set(buckets[4:24]) == {3}
    assert set(buckets[24:]) == {4}


def test_count_buckets() -> None:
    assert [count_bucket(n) for n in (0, 1, 9, 10, 99, 100, 9999, 10000, 10**7)] == [
        "0", "1-9", "1-9", "10-99", "10-99", "100-999", "1000-9999", "10000+", "10000+",
    ]  # fmt: skip


def vectors() -> dict[str, str]:
    recs = {
        "minimal": CountRecord(2917, 1, "fw-1.2.0", "esp32-c6", 1),
        "aggregated": CountRecord(2917, 4, "1.0+build.7", "nrf52840", 1234),
    }
    out = {name: encode_count_record(rec).hex() for name, rec in recs.items()}
    out["node_frame_minimal"] = report_frame(recs["minimal"]).hex()
    out["ack_counted"] = ack_frame(2917, ACK_COUNTED).hex()
    out["ack_refused"] = ack_frame(2917, ACK_REFUSED).hex()
    return out


def test_golden_vector() -> None:
    built = vectors()
    if os.environ.get("MESHOTA_WRITE_VECTORS"):
        VECTORS.write_text(json.dumps(built, indent=1, sort_keys=True) + "\n")
    assert json.loads(VECTORS.read_text()) == built
    assert built["node_frame_minimal"] == "4301" + built["minimal"]
    assert built["ack_counted"] == "430200000b6500" and built["ack_refused"] == "430200000b6501"
    assert parse_ack(bytes.fromhex(built["ack_refused"])) == (2917, ACK_REFUSED)
    rec = decode_count_record(bytes.fromhex(built["aggregated"]))
    assert rec == CountRecord(2917, 4, "1.0+build.7", "nrf52840", 1234)


@pytest.mark.parametrize(
    "data",
    [b"", b"C\x01", bytes.fromhex(vectors()["minimal"])[:-1], bytes.fromhex(vectors()["minimal"]) + b"x",
     b"D" + bytes.fromhex(vectors()["minimal"])[1:], b"C\x01" + bytes(100)],
)  # fmt: skip
def test_bad_count_records_are_refused(data: bytes) -> None:
    with pytest.raises(CountRecordError):
        decode_count_record(data)


@pytest.mark.parametrize(
    "frame", [b"", b"C\x02", b"C\x01\x00\x00\x0b\x65\x00", b"C\x02\x00\x00\x0b\x65\x02",
              b"C\x02\x00\x00\x0b\x65\x00\x00"],
)  # fmt: skip
def test_bad_acknowledgements_are_refused(frame: bytes) -> None:
    with pytest.raises(CountRecordError):
        parse_ack(frame)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=12))
def test_acknowledgement_parser_takes_any_bytes(frame: bytes) -> None:
    try:
        window, code = parse_ack(frame)
    except CountRecordError:
        return
    assert ack_frame(window, code) == frame


def test_a_node_reports_itself_only() -> None:
    with pytest.raises(CountRecordError):
        report_frame(CountRecord(1, 1, "fw", "esp32", 2))


def test_labels_carry_no_free_text() -> None:
    with pytest.raises(CountRecordError):
        encode_count_record(CountRecord(1, 1, "fw 1 (alice@example.org)", "esp32", 1))
    with pytest.raises(CountRecordError):
        encode_count_record(CountRecord(1, 5, "fw", "esp32", 1))


def test_cells_below_k_are_hidden() -> None:
    result = suppress({"a": 20, "b": 4, "c": 7}, 5)
    # b alone (4) would be derivable from the total: c is hidden with it, other = 11 >= k
    assert result.shown == {"a": 20} and result.other == 11 and result.total == 31
    assert suppress({"a": 4}, 5).total == 0
    assert suppress({"a": 5, "b": 5}, 5).shown == {"a": 5, "b": 5}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 30), max_size=12))
def test_suppression_never_leaks_a_small_group(cells: dict[str, int]) -> None:
    result = suppress(cells, 5)
    assert all(n >= 5 for n in result.shown.values())
    assert result.other == 0 or result.other >= 5
    assert result.total in (0, sum(cells.values()))
    if result.total:
        assert sum(result.shown.values()) + result.other == result.total
