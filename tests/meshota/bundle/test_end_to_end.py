"""End to end: export at server A, import at server B (nothing but the bundle file passes
between them), a simulated mesh at B updates from the imported deployment, and the status bundle
back at A shows every node's success. Then the air-gap rules on the way back: the same status
bundle twice lands once, an older one is a rollback."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from meshota.bundle import BundleError, SigningRepo, import_bundle, pin_root, status_export, status_import
from tests.support.bundles import World, counts, run_mesh


def test_export_import_update_status_back(world: World, tmp_path: Path) -> None:
    # the air gap: only these files cross (the bundle one way, the status bundle the other)
    carried = tmp_path / "usb-stick"
    carried.mkdir()
    bundle = world.export("to-site.tar")
    shutil.move(bundle, carried / "to-site.tar")

    # site B: pins A's root (handed over once, out of band), dry-run, import, import again
    trust_b = world.trust("site-trust")
    say: list[str] = []
    plan = import_bundle(carried / "to-site.tar", trust_b, world.ctx(world.b), dry_run=True, say=say.append,
                         run=world.b.run)  # fmt: skip
    assert counts(world.b) == (0, 0, 0)
    assert plan.deployments[0].state == "new" and len(plan.deployments[0].devices) == world.nodes
    plan = import_bundle(carried / "to-site.tar", trust_b, world.ctx(world.b), dry_run=False, say=say.append,
                         run=world.b.run)  # fmt: skip
    assert [a.state for a in plan.artifacts] == ["relocated"]
    assert counts(world.b) == (1, 1, 1)
    again = import_bundle(carried / "to-site.tar", trust_b, world.ctx(world.b), dry_run=False, say=say.append,
                          run=world.b.run)  # fmt: skip
    assert again.nothing_to_do and counts(world.b) == (1, 1, 1), "a good bundle imported twice imports once"
    site_deployment = plan.deployments[0].local_id
    assert site_deployment is not None

    # the simulated mesh at B updates from B's server
    result = run_mesh(world.b, site_deployment, world.image, world.factory, world.nodes, seed=19)
    assert world.b.statistics(site_deployment)["success"] == world.nodes, result.summary

    # status back: B signs with its own key; A pins B's root once
    site_repo = SigningRepo.init(world.base / "repo-B", world.base / "root-keys-B")
    trust_a = world.base / "trust-site-B"
    pin_root(trust_a, site_repo.dir / "root_history" / "1.root.json")
    status = carried / "status-1.tar"
    version, count = status_export(world.ctx(world.b), trust_b, site_repo, status, site="rig-7", since=0.0,
                                   expires=timedelta(days=30), run=world.b.run)  # fmt: skip
    assert count == world.nodes
    assert world.a.statistics(world.deployment)["success"] == 0
    landing = status_import(status, trust_a, world.ctx(world.a), say=say.append, run=world.a.run)
    assert (landing.landed, landing.refused) == (world.nodes, [])
    stats = world.a.statistics(world.deployment)
    assert stats["success"] == world.nodes, stats

    # replay-safe: the same status bundle again changes nothing; an older one is a rollback
    landing = status_import(status, trust_a, world.ctx(world.a), say=say.append, run=world.a.run)
    assert (landing.landed, landing.unchanged) == (0, world.nodes)
    newer = carried / "status-2.tar"
    status_export(world.ctx(world.b), trust_b, site_repo, newer, site="rig-7", since=0.0,
                  expires=timedelta(days=30), run=world.b.run)  # fmt: skip
    status_import(newer, trust_a, world.ctx(world.a), say=say.append, run=world.a.run)
    with pytest.raises(BundleError, match="rollback"):
        status_import(status, trust_a, world.ctx(world.a), say=say.append, run=world.a.run)
    assert version == 1
