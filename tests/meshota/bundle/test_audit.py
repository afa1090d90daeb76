"""Bundle writes go through the service layer as an operator: audited at both servers, and a
principal without the permission is refused (nothing imported)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.service import BUILTIN_ROLES, Principal
from bridge.store import DEFAULT_ORG_ID
from mesh_sim.server import ApiServer
from meshota.bundle import (
    BundleError,
    ImportLog,
    SigningRepo,
    import_bundle,
    pin_root,
    status_export,
    status_import,
    verify,
)
from meshota.bundle._server import apply_import, plan_import
from tests.support.bundles import World, counts


def audit(server: ApiServer) -> list[dict[str, object]]:
    r = server.call("GET", "/api/management/v1/auditlogs/logs?per_page=500", token=server.user_token)
    assert r.status == 200, r.body
    entries: list[dict[str, object]] = json.loads(r.body)
    return entries


def actions(server: ApiServer) -> list[str]:
    return [str(e["action"]) for e in audit(server)]


def test_bundle_writes_are_audited(world: World, tmp_path: Path) -> None:
    bundle = world.export("audited.tar")
    assert "bundle.export" in actions(world.a)
    trust = world.trust("trust-audit")
    import_bundle(bundle, trust, world.ctx(world.b), dry_run=False, say=lambda _: None, run=world.b.run)
    entries = audit(world.b)
    created = [e for e in entries if e["action"] == "deployment.create"]
    assert len(created) == 1 and json.loads(str(created[0]["change"]))["source"] == world.deployment
    assert {"artifact.upload", "deployment.create"} <= {str(e["action"]) for e in entries}
    assert all(e["actor"]["type"] == "operator" for e in created)  # type: ignore[index]

    site = SigningRepo.init(tmp_path / "site-repo", tmp_path / "site-keys")
    status = tmp_path / "status.tar"
    status_export(world.ctx(world.b), trust, site, status, site="rig-7", since=0.0, expires=timedelta(days=1),
                  run=world.b.run)  # fmt: skip
    trust_a = tmp_path / "trust-a"
    pin_root(trust_a, site.dir / "root_history" / "1.root.json")
    status_import(status, trust_a, world.ctx(world.a), say=lambda _: None, run=world.a.run)
    landed = [e for e in audit(world.a) if e["action"] == "bundle.status_import"]
    assert len(landed) == 1 and json.loads(str(landed[0]["change"]))["site"] == "rig-7"


def test_an_observer_may_not_import(world: World) -> None:
    observer = Principal.of(
        "operator", "obs", "observer", DEFAULT_ORG_ID, (BUILTIN_ROLES["RBAC_ROLE_OBSERVER"],)
    )
    bundle = world.export("observer.tar")
    trust = world.trust("trust-observer")
    before = counts(world.b)
    with verify(bundle, trust) as b:
        log = ImportLog.load(trust)

        async def go() -> None:
            plan = await plan_import(world.b.ctx, observer, b, log)  # reading is allowed
            assert plan.deployments[0].state == "new"
            await apply_import(world.b.ctx, observer, b, plan, log)

        with pytest.raises(BundleError, match=r"observer may not (upload artifacts|create deployments)"):
            world.b.run(go())
    assert counts(world.b) == before
