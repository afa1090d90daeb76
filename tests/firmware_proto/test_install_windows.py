"""Install windows and consent in the update agent, on the harness's virtual clock.

Nodes download whenever they can and install only inside a window; ``download-then-ask`` installs
only after consent; ``ask-first`` asks for nothing before consent and never installs without it
(hypothesis over windows, learn times and run lengths). Waits are visible as
``pause_before_installing`` with substate ``awaiting window`` / ``awaiting consent``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_proto import boot as bootmod
from firmware_proto.update_agent import AWAITING_CONSENT, AWAITING_WINDOW, AgentState
from tests.support.update import Artifacts, all_final, harness
from wire.install_policy import InstallPolicy, PolicyError


def _timeline(h, node=0):  # type: ignore[no-untyped-def]
    return [(t, status, sub) for t, n, status, sub in h.service.timeline if n == node]


def _installed_at(h, node=0) -> float | None:  # type: ignore[no-untyped-def]
    return next((t for t, status, _ in _timeline(h, node) if status == "installing"), None)


def test_downloads_outside_the_window_installs_inside(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=2)
    h.add_root("root")
    policy = InstallPolicy("automatic", ((200.0, 260.0),), 10_000.0)
    for n in h.nodes:
        h.learn(n, "d2", "a2", "mem://a2", policy)
    h.run(1000, stop=lambda: all_final(h))
    assert h.service.root_fetches == 1
    for n in h.nodes:
        assert h.service.final_status(n, "d2") == "success"
        line = _timeline(h, n)
        downloaded = next(t for t, s, _ in line if s == "downloading")
        waiting = next(t for t, s, sub in line if (s, sub) == ("pause_before_installing", AWAITING_WINDOW))
        installed = _installed_at(h, n)
        assert downloaded < waiting < 200.0  # downloaded and verified outside the window, then waited
        assert installed is not None and 200.0 <= installed < 260.0


def test_download_then_ask_waits_for_consent(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=1)
    h.add_root("root")
    h.learn(0, "d2", "a2", "mem://a2", InstallPolicy("download-then-ask", None, 10_000.0))
    h.run(500)
    assert h.nodes[0].agent is not None and h.nodes[0].agent.state is AgentState.AWAITING_INSTALL
    assert [sub for _, s, sub in _timeline(h) if s == "pause_before_installing"] == [AWAITING_CONSENT]
    assert _installed_at(h) is None and h.service.root_fetches == 1
    h.consent(0, "other-deployment")  # consent for something else changes nothing
    h.run(600)
    assert _installed_at(h) is None
    h.consent(0, "d2")
    h.run(2000, stop=lambda: all_final(h))
    assert h.service.final_status(0, "d2") == "success"


def test_consent_survives_a_reboot_and_the_window_still_applies(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=1)
    h.add_root("root")
    policy = InstallPolicy("download-then-ask", ((900.0, 1000.0),), 10_000.0)
    h.learn(0, "d2", "a2", "mem://a2", policy)
    h.run(300)
    rig = h.nodes[0]
    assert rig.agent is not None and rig.agent.state is AgentState.AWAITING_INSTALL
    h.consent(0, "d2")
    h._boot(rig)  # a reboot while waiting: state, policy and consent come back from flash
    assert rig.agent is not None and rig.agent.state is AgentState.AWAITING_INSTALL
    h.run(3000, stop=lambda: all_final(h))
    assert [sub for _, s, sub in _timeline(h) if s == "pause_before_installing"] == [
        AWAITING_CONSENT,
        AWAITING_WINDOW,  # consent given after the reboot, the window not open yet
    ]
    installed = _installed_at(h)
    assert installed is not None and 900.0 <= installed < 1000.0
    assert h.service.final_status(0, "d2") == "success"


def test_stale_policy_waits_until_a_fresh_one_arrives(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=1)
    h.add_root("root")
    h.learn(0, "d2", "a2", "mem://a2", InstallPolicy("automatic", None, 1.0))  # valid until t=1
    h.run(400)
    assert _installed_at(h) is None  # downloaded, but the policy went stale: no install on old news
    h.learn(0, "d2", "a2", "mem://a2", InstallPolicy("automatic", None, 10_000.0))  # next check-in
    h.run(2000, stop=lambda: all_final(h))
    assert h.service.final_status(0, "d2") == "success"


def test_ask_first_downloads_nothing_before_consent(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=1)
    h.add_root("root")
    h.learn(0, "d2", "a2", "mem://a2", InstallPolicy("ask-first", None, 10_000.0))
    h.run(500)
    agent = h.nodes[0].agent
    assert agent is not None and agent.state is AgentState.AWAITING_CONSENT
    assert h.service.root_fetches == 0 and agent.chunks_verified == 0 and not h.service.map_fetches
    assert [(s, sub) for _, s, sub in _timeline(h)] == [("pause_before_installing", AWAITING_CONSENT)]
    h.consent(0, "d2")
    h.run(2000, stop=lambda: all_final(h))
    assert h.service.final_status(0, "d2") == "success"


_windows = st.lists(
    st.tuples(st.floats(0, 5000), st.floats(1, 2000)).map(lambda p: (p[0], p[0] + p[1])), max_size=4
).map(lambda w: tuple(sorted(w)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    windows=st.none() | _windows,
    learn_at=st.floats(0, 3000),
    run_for=st.floats(10, 8000),
    reboot=st.booleans(),
    relearn=st.booleans(),
)
def test_ask_first_never_installs_without_consent(
    artifacts: Artifacts,
    windows: tuple[tuple[float, float], ...] | None,
    learn_at: float,
    run_for: float,
    reboot: bool,
    relearn: bool,
) -> None:
    h = harness(artifacts, nodes=1)
    h.add_root("root")
    h.run(learn_at)
    h.now = max(h.now, learn_at)
    policy = InstallPolicy("ask-first", windows, learn_at + 20_000)
    h.learn(0, "d2", "a2", "mem://a2", policy)
    h.run(learn_at + run_for / 2)
    if reboot:
        h._boot(h.nodes[0])
    if relearn:  # the next check-in repeats the deployment and its policy
        h.learn(0, "d2", "a2", "mem://a2", policy)
    h.run(learn_at + run_for)
    statuses = [s for _, s, _ in _timeline(h)]
    assert "installing" not in statuses and "success" not in statuses and "downloading" not in statuses
    rig = h.nodes[0]
    assert bootmod.read_boot(rig.flash).trial is None and rig.slot_history[-1] == 0
    assert h.service.root_fetches == 0


def test_policy_record_round_trip_and_garbage() -> None:
    p = InstallPolicy("download-then-ask", ((100.0, 200.0), (300.0, 400.0)), 1000.0)
    raw = p.encode()
    assert raw.hex() == "0100000003e80002" + "00000064000000c8" + "0000012c00000190"
    assert InstallPolicy.decode(raw) == p
    assert InstallPolicy.decode(InstallPolicy().encode()) == InstallPolicy()
    for bad in (b"", b"\x07" + raw[1:], raw[:-1], bytes.fromhex("0001000003e80001") + bytes(8)):
        with pytest.raises(PolicyError):
            InstallPolicy.decode(bad)


def test_a_torn_policy_record_never_widens_what_is_allowed(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=1)
    h.add_root("root")
    h.learn(0, "d2", "a2", "mem://a2", InstallPolicy("download-then-ask", None, 10_000.0))
    h.run(500)
    rig = h.nodes[0]
    rig.flash.write_record("policy", b"\x07torn")
    h._boot(rig)
    h.run(2000)
    assert _installed_at(h) is None
    assert rig.agent is not None and rig.agent.policy.consent == "ask-first"
