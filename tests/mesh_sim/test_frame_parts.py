"""mesh_sim with frame-granular recovery (SPEC.md §3.2): 802.15.4 streams blocks as one-frame PART
frames, WiFi keeps whole DATA frames; determinism and the tamper outcome hold with parts."""

from __future__ import annotations

import pytest

from mesh_sim.radio import PROFILES
from mesh_sim.runner import run_scenario
from mesh_sim.scenario import ScenarioError, parse_scenario
from mesh_sim.sizing import part_room


def small(parts: str = "auto", **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "topology": {"kind": "random", "nodes": 25, "loss": 0.05},
        "radio": {"profile": "802.15.4"},
        "image": {"size": 32 * 1024},
        "collection": {"window": 3.0},
        "stream": {"parts": parts},
    }
    doc.update(over)
    return doc


def test_parts_are_chosen_per_radio_profile() -> None:
    assert part_room(PROFILES["802.15.4"]) == 127 - 11 - 11 - 9  # one frame: MAC, IPHC/UDP, PART header
    assert part_room(PROFILES["wifi-mesh"]) == 0  # a DATA datagram is one frame there already
    assert part_room(PROFILES["802.15.4"], "off") == 0


def test_802154_parts_same_seed_same_trace_and_every_node_installs() -> None:
    sc = parse_scenario(small())
    a = run_scenario(sc, 2)
    assert run_scenario(sc, 2).trace_hash == a.trace_hash
    s = a.summary
    assert s["installed"] == 25 and s["tampered_installs"] == 0
    assert s["chunk_size"] == 16 * part_room(PROFILES["802.15.4"])  # 16 parts a block
    # every data frame is one link frame (no 6LoWPAN fragmentation of PART datagrams)
    p = PROFILES["802.15.4"]
    assert s["frames_by_kind"]["data"] * (p.max_frame + p.phy_overhead) >= s["bytes_by_kind"]["data"]


def test_802154_parts_cost_fewer_bytes_than_whole_datagrams() -> None:
    on = run_scenario(parse_scenario(small("on")), 1).summary
    off = run_scenario(parse_scenario(small("off")), 1).summary
    assert on["installed"] == off["installed"] == 25
    assert on["ratios"]["mupgrade_over_group"] > off["ratios"]["mupgrade_over_group"]


def test_802154_tampering_root_with_parts_never_installs_a_bad_image() -> None:
    doc = small(faults=[{"kind": "malicious_root", "mode": "tamper", "fraction": 0.2}])
    s = run_scenario(parse_scenario(doc), 1).summary
    assert s["tampered_installs"] == 0
    assert s["rejected_chunks"] > 0
    assert s["installed"] == 25


@pytest.mark.parametrize(
    ("stream", "needle"), [({"parts": "maybe"}, "stream.parts"), ({"part_count": 17}, "part_count")]
)
def test_bad_parts_settings_are_refused(stream: dict[str, object], needle: str) -> None:
    with pytest.raises(ScenarioError, match=needle):
        parse_scenario(small(stream=stream))
