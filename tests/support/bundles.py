"""Two in-process servers (A connected, B air-gapped), a signing repository at A, and archive
surgery for the refusal tests (tuf-conformance style: one bad thing per bundle)."""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bridge.api import ApiContext
from bridge.store import tables as t
from mesh_sim.server import ApiServer, make_mender_artifact
from meshota.bundle import SigningRepo, export_bundle, pin_root
from meshota.bundle._repo import load_signers

__all__ = ["World", "counts", "make_world", "member", "past", "resign", "rewrite", "snapshot_dir"]


@dataclass
class World:
    base: Path
    a: ApiServer
    b: ApiServer
    repo: SigningRepo
    root_keys: Path
    deployment: str
    nodes: int
    image: bytes
    factory: bytes

    @staticmethod
    def ctx(server: ApiServer) -> Callable[[], Any]:
        @contextlib.asynccontextmanager
        async def open_ctx() -> AsyncIterator[ApiContext]:
            yield server.ctx

        return open_ctx

    def export(self, name: str, *, repo: SigningRepo | None = None, expires: Any = None, **kw: Any) -> Path:
        out = self.base / name
        export_bundle(
            self.ctx(self.a),
            repo or self.repo,
            out,
            expires=expires if expires is not None else timedelta(days=30),
            deployment_ids=kw.pop("deployment_ids", [self.deployment]),
            run=self.a.run,
            **kw,
        )
        return out

    def trust(self, name: str) -> Path:
        path = self.base / name
        shutil.rmtree(path, ignore_errors=True)
        pin_root(path, self.repo.dir / "root_history" / "1.root.json")
        return path

    def close(self) -> None:
        self.a.close()
        self.b.close()


def make_world(
    base: Path, nodes: int = 3, image_size: int = 64 * 1024, b_db: tuple[str, str | None] | None = None
) -> World:
    """``b_db``: (URL, schema) of site B's store instead of a SQLite file (PostgreSQL)."""
    a = ApiServer(base / "A")
    url, schema = b_db or (None, None)
    b = ApiServer(base / "B", vendor_key=a.vendor_key, db_url=url, db_schema=schema)
    rng = random.Random(19)
    factory = make_mender_artifact(base, "fw-1.0", rng.randbytes(4096), a.vendor_pem)
    image = make_mender_artifact(base, "fw-2.0", rng.randbytes(image_size), a.vendor_pem)
    a.login_admin()
    b.login_admin()
    a.upload_artifact(image)
    for v in range(nodes + 1):  # node 0 is the root of the mesh
        a.enroll(v, "fw-1.0")
        b.enroll(v, "fw-1.0")
    deployment = a.create_deployment("rig-7 firmware", "fw-2.0")
    repo = SigningRepo.init(base / "repo-A", base / "root-keys-A")
    return World(base, a, b, repo, base / "root-keys-A", deployment, nodes + 1, image, factory)


def counts(server: ApiServer) -> tuple[int, int, int]:
    """(artifacts, deployments, artifact files) at ``server``."""

    async def read() -> tuple[int, int]:
        async with server.store.read() as conn:
            arts = (await conn.execute(sa.select(sa.func.count()).select_from(t.artifacts))).scalar_one()
            deps = (await conn.execute(sa.select(sa.func.count()).select_from(t.deployments))).scalar_one()
        return int(arts), int(deps)

    arts, deps = server.run(read())
    return arts, deps, len(server.ctx.blobs.listing())


def snapshot_dir(path: Path) -> dict[str, bytes]:
    """Every file of a trust directory but its lock file."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def rewrite(
    src: Path,
    dst: Path,
    *,
    replace: dict[str, bytes | None] | None = None,
    add: list[tuple[tarfile.TarInfo, bytes | None]] | None = None,
) -> Path:
    """Copy archive ``src`` to ``dst``, replacing members (None drops one) and adding raw ones."""
    replace = replace or {}
    with tarfile.open(src) as tin, tarfile.open(dst, "w:", format=tarfile.PAX_FORMAT) as tout:
        for info in tin:
            if info.name in replace:
                data = replace[info.name]
                if data is None:
                    continue
                new = tarfile.TarInfo(info.name)
                new.size = len(data)
                tout.addfile(new, io.BytesIO(data))
            else:
                tout.addfile(info, tin.extractfile(info))
        for info, data in add or []:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def resign(
    src: Path,
    dst: Path,
    online_keys: Path,
    *,
    snapshot_expires: datetime | None = None,
    targets_from: Path | None = None,
) -> Path:
    """Re-sign a bundle's snapshot (and timestamp over it) with the real online keys: an expired
    snapshot under a fresh timestamp, or a snapshot that names another bundle's targets."""
    from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

    signers = list(load_signers(online_keys).values())
    replace: dict[str, bytes | None] = {}
    snap = Metadata[Snapshot].from_bytes(member(src, "metadata/snapshot.json"))
    if snapshot_expires is not None:
        snap.signed.expires = snapshot_expires
    if targets_from is not None:
        other = member(targets_from, "metadata/targets.json")
        version = Metadata[Targets].from_bytes(other).signed.version
        snap.signed.meta["targets.json"] = MetaFile(version=version)
        replace["metadata/targets.json"] = other
    snap.signatures.clear()
    for s in signers:
        snap.sign(s, append=True)
    snap_bytes = snap.to_bytes()
    ts = Metadata[Timestamp].from_bytes(member(src, "metadata/timestamp.json"))
    ts.signed.snapshot_meta = MetaFile(version=snap.signed.version)
    ts.signatures.clear()
    for s in signers:
        ts.sign(s, append=True)
    replace["metadata/snapshot.json"] = snap_bytes
    replace["metadata/timestamp.json"] = ts.to_bytes()
    return rewrite(src, dst, replace=replace)


def past(days: int = 1) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0)


def run_mesh(
    server: ApiServer, deployment_id: str, image: bytes, factory: bytes, nodes: int, seed: int
) -> Any:
    """The simulated mesh (meshota demo's) updating from ``server``'s deployment: every node
    asks ``next``, the root fetches the artifact once and streams it; statuses go to ``server``."""
    from mesh_sim.runner import ServerSide, run_scenario
    from mesh_sim.scenario import parse_scenario
    from mesh_sim.server import ApiDeviceService

    offers = [server.next_deployment(v, "fw-1.0") for v in range(nodes)]
    assert {o["id"] for o in offers} == {deployment_id}, offers
    artifact_id = offers[0]["artifact"]["id"]
    service = ApiDeviceService(server, artifact_id, "fw-2.0", offers[0]["artifact"]["source"]["uri"])
    sc = parse_scenario(
        {
            "name": "bundle-site",
            "seed": seed,
            "topology": {"kind": "line", "nodes": nodes, "loss": 0.02},
            "radio": {"profile": "wifi-mesh"},
            "image": {"size": len(image), "seq": 1, "artifact": "fw-2.0"},
            "collection": {"window": 5.0},
        }
    )
    side = ServerSide(
        service=service,
        artifact_id=artifact_id,
        deployment_id=deployment_id,
        image=image,
        factory_image=factory,
        factory_name="fw-1.0",
        image_ok=server.image_ok(),
        map_key=server.chunk_map_public_key(),
        factory_sequence=0,
        on_status=service.report_status,
        fetch_artifact=service.fetch_artifact,
    )
    result = run_scenario(sc, server_side=side)
    assert not service.status_errors, service.status_errors
    return result
