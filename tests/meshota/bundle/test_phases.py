"""A phased deployment (phases, retries, gates, install window) travels in the bundle and the
site's deployment is phased the same way, created by the server's own rollout code."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from meshota.bundle import BundleError, import_bundle
from meshota.bundle._repo import BundleMember
from tests.support.bundles import World, member, past

_DEPLOYMENTS = "/api/management/v1/deployments/deployments"


def test_phases_cross_the_air_gap(world: World, tmp_path: Path) -> None:
    a, b = world.a, world.b
    body = {
        "name": "phased",
        "artifact_name": "fw-2.0",
        "devices": [a.device_ids[v] for v in sorted(a.device_ids)],
        "phases": [{"batch_size": 25}, {"batch_size": 25}, {}],
        "retries": 2,
        "gates": {"success_share": 1.0, "error_share": 0.5, "on_error": "abort", "approve": True},
    }
    r = a.call("POST", _DEPLOYMENTS, token=a.user_token, body=body)
    assert r.status == 201, r.body
    phased = dict(r.headers)["Location"].rsplit("/", 1)[1]
    out = world.export("phased.tar", deployment_ids=[phased], expires=timedelta(days=1))
    carried = json.loads(member(out, "bundle.json"))["deployments"][0]
    assert [p.get("batch_size") for p in carried["phases"]] == [25, 25, None] and carried["retries"] == 2

    lines: list[str] = []
    plan = import_bundle(out, world.trust("trust-phases"), world.ctx(b), dry_run=False, say=lines.append,
                         run=b.run)  # fmt: skip
    assert any("phased: 3 phase(s), retries 2" in line for line in plan.lines()), plan.lines()
    site = json.loads(
        b.call("GET", f"{_DEPLOYMENTS}/{plan.deployments[0].local_id}", token=b.user_token).body
    )
    assert [p["device_count"] for p in site["phases"]] == [1, 1, world.nodes - 2], site
    assert site["retries"] == 2
    assert site["meshota_rollout"]["gates"]["on_error"] == "abort"
    assert site["meshota_rollout"]["state"] == "running"


def test_a_bad_rollout_is_refused_by_the_sites_rules(world: World, tmp_path: Path) -> None:
    """Phases the site's server would refuse (over 100 %) refuse the deployment in the plan."""
    good = world.export("for-bad-phases.tar", expires=timedelta(days=1))
    manifest = json.loads(member(good, "bundle.json"))
    manifest["deployments"][0]["phases"] = [{"batch_size": 80}, {"batch_size": 80}, {}]
    name = next(a["path"] for a in manifest["artifacts"])
    out = tmp_path / "bad-phases.tar"
    with world.repo.locked() as versions:
        manifest["version"] = world.repo.next_version(versions)
        members = [BundleMember("bundle.json", data=json.dumps(manifest).encode()),
                   BundleMember(name, data=member(good, name))]  # fmt: skip
        world.repo.write_bundle(out, members, versions=versions, expires=past(-1))
    trust = world.trust("trust-bad-phases")
    plan = import_bundle(out, trust, world.ctx(world.b), dry_run=True, say=lambda _: None, run=world.b.run)
    assert plan.deployments[0].state == "refused" and "add up to 160%" in plan.deployments[0].reason
    with pytest.raises(BundleError, match="no deployment applies here: rollout: phase batch sizes"):
        import_bundle(out, trust, world.ctx(world.b), dry_run=False, say=lambda _: None, run=world.b.run)
