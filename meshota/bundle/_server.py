"""The thin adapter between bundles and the server: reads what to export, plans and applies an
import, collects and lands statuses.

Everything runs as a principal (``by``: the operator of one organisation, as ``meshota admin``)
through the service layer (``ctx.gov``, bridge/service): every read in a ``gov.read`` and every
write in a ``gov.unit`` (the one permission check, the organisation's tenant scope, one
transaction, audit entries in it), calling the functions the HTTP handlers call:
``store_staged_artifact`` (the upload's checks: vendor signature, limits, name conflicts; audited
``artifact.upload``), ``create_deployment`` (audited ``deployment.create`` with the bundle),
``report_status`` + ``store_log`` (what ``PUT .../status`` and ``PUT .../log`` do; audited
``bundle.status_import``). What was imported from which bundle is kept next to the trust state, in
``imported.json`` of the trust directory (:class:`ImportLog`).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.api import (
    ApiContext,
    ApiError,
    RolloutSpec,
    Settings,
    check_log,
    check_status,
    create_deployment,
    group_devices,
    parse_rollout,
    report_status,
    store_log,
    store_staged_artifact,
)
from bridge.artifacts import BlobStore, VerifyKey
from bridge.service import Denied, Principal, operator, org_by_name
from bridge.store import DEFAULT_ORG_ID, Store
from bridge.store import rollout_tables as rt
from bridge.store import tables as t

from ._errors import BundleError, BundleUsageError
from ._repo import BundleMember
from ._verify import VerifiedBundle

__all__ = [
    "DEFAULT_OPERATOR",
    "ImportLog",
    "ImportPlan",
    "create_group_deployments",
    "export_contents",
    "principal_for",
    "server_context",
]

_CHUNK = 1 << 20
DEFAULT_OPERATOR = operator(DEFAULT_ORG_ID, "meshota-bundle")
_REPORTABLE = {"downloading", "installing", "rebooting", "success", "failure", "already-installed",
               "pause_before_installing", "pause_before_rebooting", "pause_before_committing"}  # fmt: skip


@contextlib.asynccontextmanager
async def server_context(
    db: str, artifacts: Path, *, schema: str | None = None, verify_keys: Sequence[VerifyKey] = ()
) -> AsyncIterator[ApiContext]:
    """The server's store and artifact files, opened as ``meshota server`` opens them."""
    store = Store.open(db, schema=schema)
    try:
        await store.migrate()
        blobs = BlobStore(artifacts)
        yield await ApiContext.create(store, blobs, Settings(verify_keys=tuple(verify_keys)))
    finally:
        await store.close()


async def principal_for(ctx: ApiContext, org: str | None) -> Principal:
    """The operator of organisation ``org`` (by name; None: the default one), as ``meshota admin``."""
    if org is None:
        return DEFAULT_OPERATOR
    try:
        async with ctx.store.read() as conn:  # organisations are installation-wide
            found = await org_by_name(conn, org)
    except Denied as exc:
        raise BundleUsageError(f"bad --org value {org!r}: {exc}") from None
    return operator(found.id, "meshota-bundle")


# -- export ---------------------------------------------------------------------------------------
async def create_group_deployments(
    ctx: ApiContext,
    by: Principal,
    artifact_names: Sequence[str],
    groups: Sequence[str],
    name: str | None,
    force: bool,
) -> list[str]:
    """``export --artifact A... --target G...``: one deployment per artifact and group, created
    here through the service layer (their statuses come back with the status bundle)."""
    ids = []
    artifact_names = list(dict.fromkeys(artifact_names))
    async with ctx.gov.unit(by, "deployments:manage", groups=list(groups)) as uow:
        conn = uow.conn
        # mix-and-match before anything is created: two named artifacts may not share a device type
        seen: dict[str, str] = {}
        for artifact in artifact_names:
            rows = await conn.execute(
                sa.select(t.artifacts.c.device_types).where(t.artifacts.c.name == artifact)
            )
            for (types,) in rows:
                for device_type in types:
                    if seen.setdefault(device_type, artifact) != artifact:
                        raise BundleError(
                            f"mix-and-match: device type {device_type!r} would get two targets "
                            f"({seen[device_type]!r} and {artifact!r})"
                        )
        for group in list(dict.fromkeys(groups)):
            members = await group_devices(conn, group)
            if not members:
                raise BundleError(f"group {group!r} has no devices at this server (enrol them here first)")
            for artifact in artifact_names:
                dep_name = name or f"{artifact} to {group}"
                dep_id = await create_deployment(
                    conn,
                    name=dep_name,
                    artifact_name=artifact,
                    device_ids=members,
                    group=group,
                    force=force,
                    wall_clock=ctx.clock(),
                )
                change = {
                    "name": dep_name,
                    "artifact_name": artifact,
                    "group": group,
                    "devices": len(members),
                }
                await uow.audit("deployment.create", "deployment", dep_id, {**change, "via": "bundle export"})
                ids.append(dep_id)
    return ids


async def export_contents(
    ctx: ApiContext, by: Principal, deployment_ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[BundleMember]]:
    """The manifest's artifacts and deployments for these deployments, and the files to carry."""
    artifacts: dict[str, dict[str, Any]] = {}
    deployments = []
    members: list[BundleMember] = []
    async with ctx.gov.read(by, "deployments:read") as uow:
        conn = uow.conn
        for dep_id in deployment_ids:
            row = (await conn.execute(sa.select(t.deployments).where(t.deployments.c.id == dep_id))).first()
            if row is None:
                raise BundleError(f"no deployment {dep_id} at this server")
            if row.status == "finished":
                raise BundleError(f"deployment {dep_id} is finished; nothing to carry")
            rows = list(
                await conn.execute(sa.select(t.artifacts).where(t.artifacts.c.name == row.artifact_name))
            )
            if not rows:
                raise BundleError(f"deployment {dep_id}: no artifact named {row.artifact_name!r} here")
            types: set[str] = set()
            for a in rows:
                types.update(a.device_types)
                if a.sha256 not in artifacts:
                    if not ctx.blobs.exists(a.sha256):
                        raise BundleError(f"artifact {a.name} ({a.sha256[:12]}): its file is missing here")
                    path = f"artifacts/{a.sha256}.mender"
                    artifacts[a.sha256] = {
                        "name": a.name,
                        "digest": f"sha256:{a.sha256}",
                        "size": int(a.size),
                        "device_types": list(a.device_types),
                        "signed": bool(a.signed),
                        "description": a.description,
                        "path": path,
                    }
                    members.append(BundleMember(path, path=ctx.blobs.path(a.sha256), sha256=a.sha256))
            dd = t.device_deployments
            device_rows = await conn.execute(
                sa.select(t.devices.c.id_data)
                .join(dd, dd.c.device_id == t.devices.c.id)
                .where(dd.c.deployment_id == dep_id)
                .order_by(t.devices.c.id_data)
            )
            target: dict[str, list[str]] = {
                "groups": [],
                "devices": [],
                "device_types": sorted(types),
                "submeshes": [],
            }
            if row.group_name is not None:
                target["groups"] = [row.group_name]
            else:
                target["devices"] = [r.id_data for r in device_rows]
            entry: dict[str, Any] = {
                "key": dep_id,
                "name": row.name,
                "artifact_name": row.artifact_name,
                "force": bool(row.force_installation),
                "target": target,
                "phases": [],
            }
            entry.update(await _rollout_of(conn, dep_id))
            deployments.append(entry)
    return list(artifacts.values()), deployments, members


async def _rollout_of(conn: AsyncConnection, deployment_id: str) -> dict[str, Any]:
    """A phased deployment's phases, retries, gates and install windows, in the shape of Mender's
    NewDeployment body (what ``parse_rollout`` reads at the site); {} for a plain one."""
    ro = rt.rollouts
    row = (await conn.execute(sa.select(ro).where(ro.c.deployment_id == deployment_id))).first()
    if row is None:
        return {}
    phases = []
    for p in row.phases:
        phase = {k: p[k] for k in ("batch_size", "group") if p.get(k) is not None}
        if p.get("start_ts") is not None:
            phase["start_ts"] = _rfc3339(p["start_ts"])
        phases.append(phase)
    out: dict[str, Any] = {"phases": phases, "retries": int(row.retries), "gates": dict(row.gates)}
    if row.install is not None:
        out["install"] = row.install
    return out


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rollout_body(d: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if d.get("phases"):
        body["phases"] = d["phases"]
    for key in ("retries", "gates", "install"):
        if d.get(key) not in (None, 0):
            body[key] = d[key]
    return body


async def audit_export(ctx: ApiContext, by: Principal, bundle_id: str, change: dict[str, Any]) -> None:
    """``bundle.export``: who signed which deployments into which bundle (its own unit)."""
    async with ctx.gov.unit(by, "deployments:read") as uow:
        await uow.audit("bundle.export", "bundle", bundle_id, change)


# -- what was imported -----------------------------------------------------------------------------
@dataclass
class ImportLog:
    """``imported.json`` in the trust directory: bundle id -> its version, its deployments
    (bundle key -> local id) and where its artifacts went (relocation: path -> local id)."""

    path: Path
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, trust_dir: Path) -> ImportLog:
        path = trust_dir / "imported.json"
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} is damaged: {exc}") from None
        return cls(path, dict(data.get("bundles", {})))

    def save(self) -> None:
        tmp = self.path.with_name(".imported.json.tmp")
        tmp.write_text(json.dumps({"bundles": self.bundles}, indent=2, sort_keys=True))
        os.replace(tmp, self.path)


# -- import -----------------------------------------------------------------------------------------
@dataclass
class PlannedArtifact:
    name: str
    path: str
    sha256: str
    size: int
    state: str  # "new", "present", "refused"; after the import "relocated"
    local_id: str | None = None
    reason: str = ""


@dataclass
class PlannedDeployment:
    key: str
    name: str
    local_name: str
    artifact_name: str
    force: bool
    group: str | None
    devices: list[tuple[str, str]] = field(default_factory=list)  # (device id, identity)
    already_installed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (identity or group, why)
    state: str = "new"  # "new", "imported", "refused"; after the import "created"
    local_id: str | None = None
    reason: str = ""
    rollout: RolloutSpec | None = None  # phases, retries, gates, install windows (if any)


@dataclass
class ImportPlan:
    bundle_id: str
    version: int
    artifacts: list[PlannedArtifact]
    deployments: list[PlannedDeployment]

    @property
    def nothing_to_do(self) -> bool:
        return all(a.state != "new" for a in self.artifacts) and all(
            d.state != "new" for d in self.deployments
        )

    def lines(self) -> list[str]:
        out = [f"bundle {self.bundle_id} v{self.version}"]
        for a in self.artifacts:
            what = {"new": "relocate into the artifact store", "present": f"already here ({a.local_id})",
                    "relocated": f"relocated into the artifact store ({a.local_id})",
                    "refused": f"REFUSED: {a.reason}"}[a.state]  # fmt: skip
            out.append(f"artifact   {a.name} {a.sha256[:12]} {a.size} bytes: {what}")
        for d in self.deployments:
            if d.state == "refused":
                out.append(f"deployment {d.local_name!r}: REFUSED: {d.reason}")
            elif d.state == "imported":
                out.append(f"deployment {d.local_name!r}: already imported ({d.local_id})")
            elif d.state == "created":
                out.append(
                    f"deployment {d.local_name!r}: created ({d.local_id}) for {len(d.devices)} device(s)"
                )
                if d.rollout is not None:
                    out.append(
                        f"           phased: {len(d.rollout.phases)} phase(s), retries {d.rollout.retries}"
                    )
            else:
                out.append(
                    f"deployment {d.local_name!r}: create for {len(d.devices)} device(s), "
                    f"artifact {d.artifact_name}" + (f", group {d.group}" if d.group else "")
                )
                if d.rollout is not None:
                    out.append(
                        f"           phased: {len(d.rollout.phases)} phase(s), retries {d.rollout.retries}"
                    )
                if d.already_installed:
                    out.append(f"           {len(d.already_installed)} of them already run {d.artifact_name} "
                               "(settled as already-installed when they ask)")  # fmt: skip
            for who, why in d.refused:
                out.append(f"           not targeted: {who}: {why}")
        return out


async def _devices(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    """Every device here: id -> identity, status, group, device_type, artifact_name, mesh_id."""
    out: dict[str, dict[str, Any]] = {}
    for dev in await conn.execute(sa.select(t.devices.c.id, t.devices.c.id_data, t.devices.c.status)):
        out[dev.id] = {"identity": dev.id_data, "status": dev.status}
    inv = t.inventory
    wanted = [
        ("system", "group"),
        ("inventory", "device_type"),
        ("inventory", "artifact_name"),
        ("inventory", "mesh_id"),
    ]
    attributes = await conn.execute(
        sa.select(inv.c.device_id, inv.c.scope, inv.c.name, inv.c.value).where(
            sa.tuple_(inv.c.scope, inv.c.name).in_(wanted)
        )
    )
    for r in attributes:
        if r.device_id in out:
            out[r.device_id][r.name] = r.value
    return out


def local_name(name: str, bundle_id: str) -> str:
    return f"{name} (bundle {bundle_id[:8]})"[:255]


async def plan_import(ctx: ApiContext, by: Principal, bundle: VerifiedBundle, log: ImportLog) -> ImportPlan:
    """What importing ``bundle`` would do here; reads only."""
    m = bundle.manifest
    done = log.bundles.get(m["id"], {})
    types_of: dict[str, set[str]] = {}
    arts = []
    async with ctx.gov.read(by, "deployments:read") as uow:
        conn = uow.conn
        for a in m["artifacts"]:
            sha = a["digest"][7:]
            types_of.setdefault(a["name"], set()).update(a["device_types"])
            rows = list(await conn.execute(sa.select(t.artifacts).where(t.artifacts.c.name == a["name"])))
            same = [r for r in rows if r.sha256 == sha]
            clash = [r for r in rows if r.sha256 != sha and set(r.device_types) & set(a["device_types"])]
            if same:
                arts.append(PlannedArtifact(a["name"], a["path"], sha, a["size"], "present", same[0].id))
            elif clash:
                reason = (
                    f"another artifact named {a['name']!r} for these device types is here ({clash[0].id})"
                )
                arts.append(PlannedArtifact(a["name"], a["path"], sha, a["size"], "refused", reason=reason))
            else:
                arts.append(PlannedArtifact(a["name"], a["path"], sha, a["size"], "new"))
        devices = await _devices(conn)
        by_identity = {d["identity"]: i for i, d in devices.items()}
        refused_names = {a.name for a in arts if a.state == "refused"}
        deps = []
        claimed: dict[tuple[str, str], str] = {}  # (device, device type) -> deployment key
        for d in m["deployments"]:
            target = d["target"]
            groups = target.get("groups", [])
            plan = PlannedDeployment(
                d["key"], d["name"], local_name(d["name"], m["id"]), d["artifact_name"], bool(d.get("force")),
                groups[0] if len(groups) == 1 and not target.get("devices") else None,
            )  # fmt: skip
            deps.append(plan)
            existing = done.get("deployments", {}).get(d["key"])
            if existing is None:
                row = (
                    await conn.execute(
                        sa.select(t.deployments.c.id).where(
                            t.deployments.c.name == plan.local_name,
                            t.deployments.c.artifact_name == plan.artifact_name,
                        )
                    )
                ).first()
                existing = row.id if row is not None else None
            if existing is not None:
                plan.state, plan.local_id = "imported", existing
                continue
            if d["artifact_name"] in refused_names:
                plan.state, plan.reason = "refused", f"its artifact {d['artifact_name']!r} is refused"
                continue
            types = types_of[d["artifact_name"]] & set(
                target.get("device_types") or types_of[d["artifact_name"]]
            )
            submeshes = set(target.get("submeshes", []))
            candidates: dict[str, str] = {}
            for identity in target.get("devices", []):
                if identity not in by_identity:
                    plan.refused.append((identity, "not enrolled at this server"))
                else:
                    candidates[by_identity[identity]] = identity
            for group in groups:
                members = [i for i, dev in devices.items() if dev.get("group") == group]
                if not members:
                    plan.refused.append((f"group {group}", "no devices in this group here"))
                candidates.update({i: devices[i]["identity"] for i in members})
            for device_id, identity in sorted(candidates.items()):
                dev = devices[device_id]
                device_type = dev.get("device_type")
                if dev["status"] != "accepted":
                    plan.refused.append((identity, f"device is {dev['status']}, not accepted"))
                elif device_type not in types:
                    plan.refused.append((identity, f"device type {device_type!r} is not targeted"))
                elif submeshes and dev.get("mesh_id") not in submeshes:
                    plan.refused.append((identity, f"sub-mesh {dev.get('mesh_id')!r} is not targeted"))
                elif (device_id, device_type) in claimed:
                    plan.refused.append(
                        (identity, f"already targeted by deployment {claimed[(device_id, device_type)]}")
                    )
                else:
                    claimed[(device_id, device_type)] = d["key"]
                    plan.devices.append((device_id, identity))
                    if dev.get("artifact_name") == d["artifact_name"] and not plan.force:
                        plan.already_installed.append(device_id)
            if not plan.devices:
                plan.state, plan.reason = "refused", "no device here is targeted"
                continue
            try:  # the server's own parser: the site's limits and rules for phases
                plan.rollout = parse_rollout(_rollout_body(d))
            except ApiError as exc:
                plan.state, plan.reason = "refused", f"rollout: {exc.message}"
                continue
            phase_groups = [p["group"] for p in plan.rollout.phases] if plan.rollout else []
            if phase_groups and phase_groups[-1] is not None:
                outside = [i for i, _ in plan.devices if devices[i].get("group") not in phase_groups]
                if outside:
                    plan.state = "refused"
                    plan.reason = f"rollout: {len(outside)} device(s) are in none of the phases' groups"
    return ImportPlan(m["id"], bundle.version, arts, deps)


async def apply_import(
    ctx: ApiContext, by: Principal, bundle: VerifiedBundle, plan: ImportPlan, log: ImportLog
) -> dict[str, Any]:
    """Relocate the new artifacts into the store and create the new deployments, all through the
    service layer; record it in ``log``. The caller writes the trust state after this returns."""
    record = log.bundles.setdefault(plan.bundle_id, {"deployments": {}, "artifacts": {}})
    record["version"] = plan.version
    for a in plan.artifacts:
        if a.state == "present":
            record["artifacts"][a.path] = a.local_id
        if a.state != "new":
            continue
        description = f"from bundle {plan.bundle_id} v{plan.version}"
        with ctx.blobs.staging() as staged:
            with bundle.open_member(a.path) as src, staged.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
            with staged.open("rb") as fh:  # the copy is what gets stored: check it, not the archive
                try:
                    bundle.targets[a.path].verify_length_and_hashes(fh)
                except Exception as exc:
                    raise BundleError(f"{a.path} changed while it was imported: {exc}") from None
            try:
                a.local_id = await store_staged_artifact(ctx, staged, description, by=by)
            except ApiError as exc:
                raise BundleError(f"artifact {a.name} refused by the server: {exc.message}") from None
            except Denied as exc:
                raise BundleError(f"{by.name} may not upload artifacts here: {exc}") from None
        a.state = "relocated"
        record["artifacts"][a.path] = a.local_id
    try:
        async with ctx.gov.unit(by, "deployments:manage") as uow:
            conn = uow.conn
            for d in plan.deployments:
                if d.state != "new":
                    if d.local_id is not None:
                        record["deployments"][d.key] = d.local_id
                    continue
                d.local_id = await create_deployment(
                    conn,
                    name=d.local_name,
                    artifact_name=d.artifact_name,
                    device_ids=[i for i, _ in d.devices],
                    group=d.group,
                    force=d.force,
                    rollout=d.rollout,
                    wall_clock=ctx.clock(),
                )
                change = {"name": d.local_name, "artifact_name": d.artifact_name, "devices": len(d.devices),
                          "bundle": plan.bundle_id, "version": plan.version, "source": d.key}  # fmt: skip
                await uow.audit("deployment.create", "deployment", d.local_id, change)
                record["deployments"][d.key] = d.local_id
    except ApiError as exc:
        raise BundleError(f"deployment refused by the server: {exc.message}") from None
    except Denied as exc:
        raise BundleError(f"{by.name} may not create deployments here: {exc}") from None
    for d in plan.deployments:
        if d.state == "new":
            d.state = "created"
    log.save()
    return record


# -- statuses -------------------------------------------------------------------------------------
async def collect_statuses(
    ctx: ApiContext, by: Principal, log: ImportLog, since: float
) -> list[dict[str, Any]]:
    """Every device's status in the deployments imported from bundles, changed since ``since``."""
    dd = t.device_deployments
    out = []
    async with ctx.gov.read(by, "deployments:read") as uow:
        conn = uow.conn
        for bundle_id, record in sorted(log.bundles.items()):
            for key, local_id in sorted(record.get("deployments", {}).items()):
                rows = await conn.execute(
                    sa.select(dd, t.devices.c.id_data)
                    .join(t.devices, t.devices.c.id == dd.c.device_id)
                    .where(dd.c.deployment_id == local_id)
                    .where(sa.or_(dd.c.finished_ts.is_(None), dd.c.finished_ts >= since))
                    .order_by(t.devices.c.id_data)
                )
                for r in rows:
                    item: dict[str, Any] = {
                        "bundle": bundle_id,
                        "deployment": key,
                        "device": r.id_data,
                        "status": r.status,
                        "substate": r.substate,
                        "finished": r.finished_ts,
                    }
                    if r.log:
                        item["log"] = r.log
                    out.append(item)
    return out


@dataclass
class Landing:
    landed: int = 0
    unchanged: int = 0
    logs: int = 0
    pending: int = 0
    refused: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = (
            f"{self.landed} status(es) landed, {self.unchanged} already known, {self.logs} log(s) kept, "
            f"{self.pending} still pending at the site"
        )
        if self.refused:
            text += f", {len(self.refused)} refused (first: {self.refused[0]})"
        return text


async def land_statuses(
    ctx: ApiContext, by: Principal, records: list[dict[str, Any]], source: dict[str, Any]
) -> Landing:
    """Land each status (and log) as the device would have reported it online; one audit entry
    (``bundle.status_import``: the site, its status bundle's version, the counts)."""
    result = Landing()
    async with ctx.gov.unit(by, "deployments:manage") as uow:
        conn = uow.conn
        ids = {r.id_data: r.id for r in await conn.execute(sa.select(t.devices.c.id, t.devices.c.id_data))}
        for rec in records:
            device_id = ids.get(rec["device"])
            status = rec["status"]
            who = f"device {rec['device'][:60]} in deployment {rec['deployment']}"
            if device_id is None:
                result.refused.append(f"{who}: not enrolled at this server")
                continue
            if status == "pending":
                result.pending += 1
                continue
            if status not in _REPORTABLE:
                result.refused.append(f"{who}: {status} is not a status a device reports")
                continue
            try:
                check_status(ctx, status, rec.get("substate"))
                log = check_log(ctx, rec["log"]) if rec.get("log") else None
                changed = await report_status(conn, rec["deployment"], device_id, status, rec.get("substate"))
                if log is not None:
                    await store_log(conn, rec["deployment"], device_id, log)
                    result.logs += 1
            except ApiError as exc:
                result.refused.append(f"{who}: {exc.message}")
                continue
            if changed:
                result.landed += 1
            else:
                result.unchanged += 1
        change = {**source, "landed": result.landed, "unchanged": result.unchanged, "logs": result.logs,
                  "pending": result.pending, "refused": len(result.refused)}  # fmt: skip
        await uow.audit("bundle.status_import", "bundle", str(source.get("id", "")), change)
    return result


def new_bundle_id() -> str:
    return str(uuid.uuid4())
