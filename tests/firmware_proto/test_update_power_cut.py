"""Power cut at every flash write of a whole update (every state boundary and every chunk write).

Whatever write the power fails on, the node reboots through the bootloader model, resumes, and
ends running a valid signed image with the right final status reported: ``success`` (running v2)
for a good image, ``failure`` (running v1) for an image whose trial boot fails its health check.
"""

from __future__ import annotations

import pytest

from bridge.artifacts import load_verify_key
from firmware_proto import boot as bootmod
from firmware_proto.testing.group import GroupHarness
from tests.support.update import Artifacts, all_final, harness
from wire.image_verify import mender_image_verifier


def _run(artifacts: Artifacts, cut_at: int | None, healthy: bool) -> GroupHarness:
    h = harness(artifacts, nodes=1, health_check=healthy, fallback_timeout=3.0, chunk_size=1024)
    h.nodes[0].flash.cut_at = cut_at
    h.add_root("root")
    h.learn(0, "d2", "a2", "mem://a2")
    h.run(
        400,
        stop=lambda: all_final(h) and h.nodes[0].agent is not None and h.nodes[0].agent.state.name == "IDLE",
    )
    return h


def _check(h: GroupHarness, artifacts: Artifacts, expected: str, cut_at: int | None) -> None:
    rig = h.nodes[0]
    assert h.service.final_status(0, "d2") == expected, (cut_at, rig.events)
    finals = [s for d, s in h.service.statuses[0] if d == "d2" and s in ("success", "failure")]
    assert set(finals) == {expected}, (cut_at, finals)
    # what the bootloader would boot now is a valid, vendor-signed image of the expected version
    image_ok = mender_image_verifier([load_verify_key(artifacts.vendor_public)])
    state = bootmod.read_boot(rig.flash)
    assert state.trial is None, cut_at
    image = bootmod.slot_image(rig.flash, state.active)
    assert image is not None and image_ok(image)
    assert image == (artifacts.v2 if expected == "success" else artifacts.v1)
    assert rig.agent is not None and rig.agent.pending_report() is None


@pytest.mark.parametrize(("healthy", "expected"), [(True, "success"), (False, "failure")])
def test_power_cut_at_every_write(artifacts: Artifacts, healthy: bool, expected: str) -> None:
    clean = _run(artifacts, None, healthy)
    _check(clean, artifacts, expected, None)
    writes = clean.nodes[0].flash.writes
    log = clean.nodes[0].flash.log
    assert (
        writes > 10
        and any(w.startswith("record agent") for w in log)
        and any(w.startswith("slot") for w in log)
    )
    cuts_seen = 0
    for cut_at in range(writes):
        h = _run(artifacts, cut_at, healthy)
        assert h.nodes[0].cuts == 1, cut_at
        cuts_seen += 1
        _check(h, artifacts, expected, cut_at)
    assert cuts_seen == writes
