"""Targeting inside the bundle (group, sub-mesh, device type), the dry-run plan's reasons, and
a device's failure and log coming back through the status bundle."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from mesh_sim.server import ApiServer
from meshota.bundle import SigningRepo, export_bundle, import_bundle, pin_root, status_export, status_import
from tests.support.bundles import World

_INV = "/api/management/v1/inventory/devices"
_DEV = "/api/devices/v1/deployments/device/deployments"


def set_group(s: ApiServer, node: int, group: str) -> None:
    r = s.call("PUT", f"{_INV}/{s.device_ids[node]}/group", token=s.user_token, body={"group": group})
    assert r.status == 204, r.body


def set_mesh(s: ApiServer, node: int, mesh_id: str) -> None:
    """The node reports its sub-mesh (inventory attribute mesh_id)."""
    attrs = [{"name": "mesh_id", "value": mesh_id}]
    path = "/api/devices/v1/inventory/device/attributes"
    r = s.call("PATCH", path, token=s.device_tokens[node], body=attrs)
    assert r.status in (200, 204), r.body


def test_group_and_submesh_targeting_and_a_failure_back(world: World, tmp_path: Path) -> None:
    a, b = world.a, world.b
    for node in range(world.nodes):
        set_group(a, node, "rig-7")
    for node, group in enumerate(["rig-7", "rig-7", "rig-7", "galley"]):
        set_group(b, node, group)
    set_mesh(b, 0, "west")
    set_mesh(b, 1, "east")
    out = tmp_path / "group.tar"
    res = export_bundle(world.ctx(a), world.repo, out, expires=timedelta(days=2), artifact_names=["fw-2.0"],
                        groups=["rig-7"], submeshes=["west"], run=a.run)  # fmt: skip
    assert res.deployments == 1
    trust = world.trust("trust-targeting")
    plan = import_bundle(out, trust, world.ctx(b), dry_run=True, say=lambda _: None, run=b.run)
    (dep,) = plan.deployments
    assert dep.group == "rig-7"
    assert [i for i, _ in dep.devices] == [b.device_ids[0]]
    # node 1 (east) and node 2 (no mesh_id) are not targeted; node 3 is in another group
    reasons = sorted(why for _, why in dep.refused)
    assert reasons == ["sub-mesh 'east' is not targeted", "sub-mesh None is not targeted"], dep.refused
    plan = import_bundle(out, trust, world.ctx(b), dry_run=False, say=lambda _: None, run=b.run)
    local = plan.deployments[0].local_id

    # node 0 fails at the site and sends its log; both come back to A as if reported online
    token = b.device_tokens[0]
    log = {
        "messages": [{"timestamp": "2026-12-05T10:00:00Z", "level": "error", "message": "flash write failed"}]
    }
    assert b.call("PUT", f"{_DEV}/{local}/log", token=token, body=log).status == 204
    assert b.call("PUT", f"{_DEV}/{local}/status", token=token, body={"status": "failure"}).status == 204
    site = SigningRepo.init(tmp_path / "site-repo", tmp_path / "site-keys")
    trust_a = tmp_path / "trust-a"
    pin_root(trust_a, site.dir / "root_history" / "1.root.json")
    status = tmp_path / "status.tar"
    status_export(
        world.ctx(b), trust, site, status, site="rig-7", since=0.0, expires=timedelta(days=1), run=b.run
    )
    landing = status_import(status, trust_a, world.ctx(a), say=lambda _: None, run=a.run)
    assert (landing.landed, landing.logs) == (1, 1), landing
    source = res_deployment(world)
    stats = a.statistics(source)
    assert stats["failure"] == 1, stats
    r = a.call("GET", f"/api/management/v1/deployments/deployments/{source}/devices/{a.device_ids[0]}/log",
               token=a.user_token)  # fmt: skip
    assert r.status == 200 and b"flash write failed" in r.body


def res_deployment(world: World) -> str:
    """The deployment export --artifact/--target created at A (the newest one)."""
    r = world.a.call("GET", "/api/management/v1/deployments/deployments", token=world.a.user_token)
    return str(json.loads(r.body)[0]["id"])


def test_export_refuses_two_artifacts_for_one_device_type(world: World, tmp_path: Path) -> None:
    """--artifact fw-2.0 --artifact fw-3.0 for the same device type: refused before A creates any
    deployment (the site would refuse the bundle as mix-and-match)."""
    from mesh_sim.server import make_mender_artifact
    from meshota.bundle import BundleError
    from tests.support.bundles import counts

    world.a.upload_artifact(make_mender_artifact(tmp_path, "fw-3.0", b"\x01" * 2048, world.a.vendor_pem))
    before = counts(world.a)
    with pytest.raises(BundleError, match="mix-and-match: device type 'meshota-sim'"):
        export_bundle(world.ctx(world.a), world.repo, tmp_path / "two.tar", expires=timedelta(days=1),
                      artifact_names=["fw-2.0", "fw-3.0"], groups=["rig-7"], run=world.a.run)  # fmt: skip
    assert counts(world.a) == before and not (tmp_path / "two.tar").exists()
