"""Import, plan and status export at a site whose server runs on SQLite and on PostgreSQL
(the ``db`` fixture: its own schema, dropped afterwards; MESHOTA_TEST_PG_URL points elsewhere)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from meshota.bundle import ImportPlan, SigningRepo, import_bundle, pin_root, status_export, status_import
from tests.support.bundles import counts, make_world
from tests.support.mender import Db


def test_site_on_each_store(db: Db, tmp_path: Path) -> None:
    if shutil.which("mender-artifact") is None:
        pytest.skip("mender-artifact is not installed")
    world = make_world(tmp_path, nodes=2, b_db=(db.url, db.schema))
    try:
        bundle = world.export("site.tar")
        trust = world.trust("trust")

        def at_b(dry_run: bool) -> ImportPlan:
            return import_bundle(
                bundle, trust, world.ctx(world.b), dry_run=dry_run, say=print, run=world.b.run
            )

        plan = at_b(dry_run=True)
        assert len(plan.deployments[0].devices) == world.nodes and counts(world.b) == (0, 0, 0)
        at_b(dry_run=False)
        again = at_b(dry_run=False)
        assert again.nothing_to_do and counts(world.b) == (1, 1, 1)
        site = SigningRepo.init(tmp_path / "site-repo", tmp_path / "site-keys")
        status = tmp_path / "status.tar"
        _, count = status_export(world.ctx(world.b), trust, site, status, site="s", since=0.0,
                                 expires=timedelta(days=1), run=world.b.run)  # fmt: skip
        assert count == world.nodes
        trust_a = tmp_path / "trust-a"
        pin_root(trust_a, site.dir / "root_history" / "1.root.json")
        landing = status_import(status, trust_a, world.ctx(world.a), say=lambda _: None, run=world.a.run)
        assert landing.pending == world.nodes and not landing.refused
    finally:
        world.close()
