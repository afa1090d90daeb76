"""Install rules -> UTC windows (zoneinfo, daylight saving), validation, the ``next`` field."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.install_policy import HORIZON, InstallPolicy, InstallRule, PolicyError


def _ts(year: int, month: int, day: int, hour: int, minute: int, tz: str) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


def test_nightly_window_in_berlin_across_the_spring_change() -> None:
    rule = InstallRule.parse(
        {
            "windows": [{"days": ["sat", "sun"], "start": "02:30", "duration": 3600}],
            "time_zone": "Europe/Berlin",
        }
    )
    # 2026-03-28 is a Saturday; on Sunday 29 March 02:00 CET the clocks jump to 03:00 CEST
    start = _ts(2026, 3, 27, 12, 0, "Europe/Berlin")
    spans = rule.intervals(start, 3 * 86400)
    assert spans is not None and len(spans) == 2
    sat, sun = spans
    assert sat == (_ts(2026, 3, 28, 2, 30, "Europe/Berlin"), _ts(2026, 3, 28, 3, 30, "Europe/Berlin"))
    assert dt.datetime.fromtimestamp(sat[0], dt.UTC).hour == 1  # 02:30 CET is 01:30 UTC
    # 02:30 does not exist on the 29th: zoneinfo maps it forward (fold=0 -> 03:30 CEST = 01:30 UTC)
    assert dt.datetime.fromtimestamp(sun[0], dt.UTC).strftime("%H:%M") == "01:30"
    assert sun[1] - sun[0] == 3600


def test_window_open_at_start_is_listed_and_overlaps_merge() -> None:
    rule = InstallRule.parse(
        {
            "windows": [
                {"days": ["mon"], "start": "22:00", "duration": 4 * 3600},
                {"days": ["tue"], "start": "01:00", "duration": 3600},
            ],
            "time_zone": "UTC",
        }
    )
    monday_2330 = _ts(2026, 1, 5, 23, 30, "UTC")
    spans = rule.intervals(monday_2330, 86400)
    assert spans == ((_ts(2026, 1, 5, 22, 0, "UTC"), _ts(2026, 1, 6, 2, 0, "UTC")),)
    policy = rule.policy(monday_2330)
    assert policy.window_open(monday_2330) and policy.window_close(monday_2330) == spans[0][1]
    assert policy.until == monday_2330 + HORIZON
    assert InstallRule.parse({}).intervals(monday_2330) is None  # no windows: any time


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "object"),
        ({"consent": "maybe"}, "consent"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone"),
        ({"windows": [{"days": ["fri"], "start": "25:00", "duration": 60}]}, "start"),
        ({"windows": [{"days": ["someday"], "start": "01:00", "duration": 60}]}, "days"),
        ({"windows": [{"days": ["mon"], "start": "01:00", "duration": 10}]}, "duration"),
        ({"windows": [{"days": ["mon"], "start": "01:00", "duration": 60, "x": 1}]}, "unknown"),
        ({"windows": [{"days": ["mon"], "start": "01:00", "duration": 60}]} | {"extra": 1}, "unknown"),
        ({"windows": [{"days": ["mon"], "start": "01:00", "duration": 60}] * 17}, "windows"),
    ],
)
def test_bad_rules_name_the_field(body: object, field: str) -> None:
    with pytest.raises(PolicyError, match=field):
        InstallRule.parse(body)


_rule = st.builds(
    lambda days, hh, mm, dur, tz, consent: {
        "windows": [{"days": days, "start": f"{hh:02d}:{mm:02d}", "duration": dur}],
        "time_zone": tz,
        "consent": consent,
    },
    st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, unique=True),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(60, 3 * 86400),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
    st.sampled_from(["automatic", "download-then-ask", "ask-first"]),
)


@given(obj=_rule, start=st.integers(1_700_000_000, 1_900_000_000))
def test_intervals_are_sorted_disjoint_and_round_trip(obj: dict[str, object], start: int) -> None:
    rule = InstallRule.parse(obj)
    assert InstallRule.parse(rule.to_json()) == rule
    spans = rule.intervals(float(start))
    assert spans is not None
    for (a, b), (c, _) in itertools.pairwise(spans):
        assert a < b < c
    for a, b in spans:
        assert b > start and a < start + HORIZON
    policy = rule.policy(float(start))
    again = InstallPolicy.from_next(policy.to_next())
    assert again.consent == policy.consent and again.until == int(policy.until)
    assert InstallPolicy.decode(again.encode()) == again


@given(obj=st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=5)
                           | st.lists(st.integers(), max_size=3), max_size=4))  # fmt: skip
def test_garbage_next_fields_are_policy_errors(obj: dict[str, object]) -> None:
    with contextlib.suppress(PolicyError):  # any other exception fails the test
        InstallPolicy.from_next(obj)
