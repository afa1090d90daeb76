"""mesh_sim: determinism, fault outcomes, clock failure, scenario errors (``meshota sim`` and
``meshota demo``: tests/meshota/test_sim_cli.py, tests/meshota/test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_sim.clock import EventClock, SimulationError
from mesh_sim.runner import run_scenario
from mesh_sim.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "mesh_sim" / "scenarios"


def small(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "topology": {"kind": "random", "nodes": 30, "loss": 0.05},
        "radio": {"profile": "wifi-mesh"},
        "image": {"size": 64 * 1024},
        "collection": {"window": 3.0},
    }
    doc.update(over)
    return doc


def test_same_seed_same_trace_different_seed_differs() -> None:
    sc = parse_scenario(small())
    a = run_scenario(sc, 3).trace_hash
    b = run_scenario(sc, 3).trace_hash
    c = run_scenario(sc, 4).trace_hash
    assert a == b
    assert a != c


def test_clean_run_installs_everywhere_and_beats_baselines() -> None:
    res = run_scenario(parse_scenario(small()), 1)
    s = res.summary
    assert s["installed"] == 30 and s["tampered_installs"] == 0 and s["fallback_nodes"] == 0
    assert s["control_plane"]["requests_at_broker"] == 30  # real MQTT-SN sessions through the relay
    assert s["ratios"]["unicast_over_group"] > 2 and s["ratios"]["mupgrade_over_group"] > 1.5
    # the root installs the update too, but only once its stream has ended: one fetch per
    # deployment, not one per boot; relays served it from their own flash
    root = s["roots"][0]
    assert s["root_fetches"] == 1 and s["per_node"]["boots"][root] == 2
    assert s["streams"] > 1  # store-and-forward: relays streamed it on with GroupStreamRoot
    for v in range(30):  # every node's agent reported the product's Mender statuses, in order
        assert res.stream.nodes[v].reported == [
            "downloading",
            "installing",
            "rebooting",
            "success",
        ]


def test_unhandled_failure_stops_the_run() -> None:
    clock = EventClock()
    seen: list[float] = []
    clock.at(1.0, lambda: seen.append(clock.now))

    def boom() -> None:
        raise ValueError("bad")

    clock.at(2.0, boom)
    clock.at(3.0, lambda: seen.append(clock.now))
    with pytest.raises(SimulationError) as exc:
        clock.run()
    assert seen == [1.0] and exc.value.at == 2.0 and isinstance(exc.value.__cause__, ValueError)


@pytest.mark.parametrize("name", ["malicious-tamper", "malicious-replay", "malicious-withhold"])
def test_malicious_root_never_gets_a_bad_install_and_fallback_completes(name: str) -> None:
    res = run_scenario(load_scenario(SCENARIOS / f"{name}.toml"))
    s = res.summary
    assert s["tampered_installs"] == 0
    assert s["installed"] == s["nodes"]
    assert s["fallback_nodes"] > 0
    if name == "malicious-tamper":
        assert s["rejected_chunks"] > 0
    if name == "malicious-replay":
        assert s["rejected_maps"] > 0
        assert res.stream.count_events("head rejected: sequence") > 0  # refused by sequence number
    if name == "malicious-withhold":
        assert s["fallback_bytes"] > 0


def test_root_dies_reelection_completes_without_restart() -> None:
    res = run_scenario(load_scenario(SCENARIOS / "root-dies.toml"))
    s = res.summary
    dead = s["roots"][0]
    assert s["reelections"] == 1 and s["roots_at_end"] != s["roots"]
    assert not res.radio.alive[dead]
    assert all(s["per_node"]["completion_s"][v] is not None for v in range(s["nodes"]) if v != dead)
    assert s["root_fetches"] >= 2  # the new root fetched again (and after its own install reboot) ...
    assert len(res.stream.service.maps) == 1  # ... the same cached signed map: the same stream id
    # resumed: nodes kept their bitmaps, the image was not sent to everyone again
    assert s["group_stream"]["bytes_on_air"] < 2.0 * s["lower_bound"]["frame_bytes_on_air"]


def test_node_reboot_resumes_from_flash_bitmap() -> None:
    res = run_scenario(load_scenario(SCENARIOS / "node-reboots.toml"))
    s = res.summary
    assert s["installed"] == s["nodes"] and s["reelections"] == 0 and s["tampered_installs"] == 0
    node = max(range(s["nodes"]), key=lambda v: s["per_node"]["boots"][v])
    assert s["per_node"]["boots"][node] >= 3  # power-on, the fault, the install reboot
    events = res.stream.agent_events(node)
    # the rebooted agent resumed RECEIVING from its flash bitmap instead of starting over
    assert events.count("state RECEIVING") == 1 and "state IDLE" in events


def test_several_submeshes_each_elect_a_root() -> None:
    s = run_scenario(parse_scenario(small(topology={"kind": "grid", "nodes": 36, "submeshes": 3})), 1).summary
    assert len(s["roots"]) == 3 and s["installed"] == 36


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"topology": {"kind": "ring"}}, None),
        ({"topology": {"loss": 1.5}}, "loss"),
        ({"radio": {"profile": "lora"}}, "radio.profile"),
        ({"faults": [{"kind": "meteor"}]}, "faults[0].kind"),
        ({"faults": [{"kind": "malicious_root", "mode": "bribe"}]}, "faults[0].mode"),
        ({"image": {"size": "big"}}, "image.size"),
    ],
)
def test_bad_scenarios_are_refused_with_the_bad_value(doc: dict[str, object], needle: str | None) -> None:
    if needle is None:
        from mesh_sim.topology import TopologyError

        with pytest.raises(TopologyError, match="ring"):
            run_scenario(parse_scenario(doc))
        return
    with pytest.raises(ScenarioError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(doc)
