"""The bundle operations, one function per command (meshota/cli/bundle.py is their argv front).

Each takes what it needs to reach the server as ``open_ctx`` (an async context manager that
yields the server's :class:`bridge.api.ApiContext`) and ``run`` (how to run a coroutine:
``asyncio.run`` for the command line; the in-process server's own loop in the simulated demo).
Verification is synchronous file work and runs outside the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import BundleError, BundleUsageError
from ._manifest import BUNDLE_SCHEMA, STATUS_SCHEMA, check_bundle_manifest, check_status_manifest
from ._repo import BundleMember, SigningRepo
from ._verify import verify

if TYPE_CHECKING:  # the server (bridge) loads only for commands that open one: verify stays small
    from bridge.api import ApiContext

    from ._server import ImportPlan, Landing

__all__ = [
    "ExportResult",
    "export_bundle",
    "import_bundle",
    "parse_duration",
    "parse_since",
    "status_export",
    "status_import",
    "verify_bundle",
]

T = TypeVar("T")
OpenCtx = Callable[[], AbstractAsyncContextManager["ApiContext"]]
Run = Callable[[Coroutine[Any, Any, T]], T]
Say = Callable[[str], None]
_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``90s``."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise BundleUsageError(f"bad duration {text!r} (like 30d, 12h, 45m, 90s)")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def parse_since(text: str, now: datetime | None = None) -> float:
    """An RFC 3339 time, or a duration back from now (``7d``); ``all``: everything."""
    if text == "all":
        return 0.0
    try:
        return ((now or datetime.now(UTC)) - parse_duration(text)).timestamp()
    except BundleUsageError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BundleUsageError(f"bad --since value {text!r} (RFC 3339, a duration like 7d, or all)") from None
    if stamp.tzinfo is None:
        raise BundleUsageError(f"bad --since value {text!r}: give a time zone (Z)")
    return stamp.timestamp()


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ExportResult:
    bundle_id: str
    version: int
    artifacts: int
    deployments: int
    path: Path


def export_bundle(
    open_ctx: OpenCtx,
    repo: SigningRepo,
    out: Path,
    *,
    expires: timedelta | datetime,
    deployment_ids: Sequence[str] = (),
    artifact_names: Sequence[str] = (),
    groups: Sequence[str] = (),
    submeshes: Sequence[str] = (),
    name: str | None = None,
    force: bool = False,
    org: str | None = None,
    run: Run[Any] = asyncio.run,
) -> ExportResult:
    """Sign and write a deployment bundle (``meshota bundle export``); ``submeshes`` narrows
    every deployment to devices whose ``mesh_id`` inventory attribute is one of them."""
    from ._server import audit_export, create_group_deployments, export_contents, new_bundle_id, principal_for

    async def contents() -> Any:
        async with open_ctx() as ctx:
            by = await principal_for(ctx, org)
            ids = list(deployment_ids)
            if artifact_names:
                ids += await create_group_deployments(ctx, by, artifact_names, groups, name, force)
            return await export_contents(ctx, by, ids)

    artifacts, deployments, members = run(contents())
    for d in deployments:
        d["target"]["submeshes"] = sorted(set(submeshes))
    when = datetime.now(UTC)
    until = expires if isinstance(expires, datetime) else when + expires
    bundle_id = new_bundle_id()
    with repo.locked() as versions:
        version = repo.next_version(versions)
        manifest = {
            "schema": BUNDLE_SCHEMA,
            "kind": "deployment",
            "id": bundle_id,
            "name": name or ", ".join(d["name"] for d in deployments)[:255] or "bundle",
            "version": version,
            "created": _stamp(when),
            "expires": _stamp(until),
            "artifacts": artifacts,
            "deployments": deployments,
        }
        check_bundle_manifest(manifest)  # never sign what a site would refuse (mix-and-match too)
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        members = [BundleMember("bundle.json", data=data), *members]
        repo.write_bundle(out, members, versions=versions, expires=until.replace(microsecond=0))

    async def audit() -> None:
        async with open_ctx() as ctx:
            change = {
                "version": version,
                "deployments": [d["key"] for d in deployments],
                "artifacts": [a["digest"] for a in artifacts],
                "expires": manifest["expires"],
            }
            await audit_export(ctx, await principal_for(ctx, org), bundle_id, change)

    run(audit())
    return ExportResult(bundle_id, version, len(artifacts), len(deployments), out)


def verify_bundle(archive: Path, trust: Path, say: Say) -> str:
    """Check a bundle offline, printing each check (``meshota bundle verify``); its kind."""
    with verify(archive, trust, report=say) as b:
        if b.kind == "deployment":
            check_bundle_manifest(b.manifest)
            say("ok  bundle.json well-formed; mix-and-match: at most one artifact per device type and group")
        else:
            check_status_manifest(b.manifest)
            say(f"ok  status.json well-formed: {len(b.manifest['statuses'])} status record(s)")
        return b.kind


def import_bundle(
    archive: Path,
    trust: Path,
    open_ctx: OpenCtx,
    *,
    dry_run: bool,
    say: Say,
    org: str | None = None,
    run: Run[Any] = asyncio.run,
) -> ImportPlan:
    """Verify, plan, and (unless ``dry_run``) relocate artifacts and create deployments."""
    from ._server import ImportLog, apply_import, plan_import, principal_for

    with verify(archive, trust, report=say) as b:
        if b.kind != "deployment":
            raise BundleError("this is a status bundle: use meshota bundle status-import")
        check_bundle_manifest(b.manifest)
        say("ok  bundle.json well-formed; mix-and-match: at most one artifact per device type and group")
        log = ImportLog.load(trust)

        async def go() -> ImportPlan:
            async with open_ctx() as ctx:
                by = await principal_for(ctx, org)
                plan = await plan_import(ctx, by, b, log)
                if dry_run:
                    return plan
                refused = [a for a in plan.artifacts if a.state == "refused"]
                if refused:
                    raise BundleError(f"artifact {refused[0].name} refused: {refused[0].reason}")
                if all(d.state == "refused" for d in plan.deployments):
                    raise BundleError(f"no deployment applies here: {plan.deployments[0].reason}")
                if not plan.nothing_to_do:
                    await apply_import(ctx, by, b, plan, log)
                return plan

        plan: ImportPlan = run(go())
        if not dry_run:
            b.accept()
        return plan


def status_export(
    open_ctx: OpenCtx,
    trust: Path,
    repo: SigningRepo,
    out: Path,
    *,
    site: str,
    since: float,
    expires: timedelta | datetime,
    org: str | None = None,
    run: Run[Any] = asyncio.run,
) -> tuple[int, int]:
    """Sign and write the statuses of imported deployments (``status-export``): (version, count)."""
    from ._server import ImportLog, collect_statuses, new_bundle_id, principal_for

    log = ImportLog.load(trust)

    async def collect() -> list[dict[str, Any]]:
        async with open_ctx() as ctx:
            return await collect_statuses(ctx, await principal_for(ctx, org), log, since)

    records = run(collect())
    when = datetime.now(UTC)
    until = expires if isinstance(expires, datetime) else when + expires
    with repo.locked() as versions:
        version = repo.next_version(versions)
        manifest = {
            "schema": STATUS_SCHEMA,
            "kind": "status",
            "id": new_bundle_id(),
            "site": site,
            "version": version,
            "created": _stamp(when),
            "since": since,
            "statuses": records,
        }
        check_status_manifest(manifest)
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        repo.write_bundle(out, [BundleMember("status.json", data=data)], versions=versions, expires=until)
    return version, len(records)


def status_import(
    archive: Path,
    trust: Path,
    open_ctx: OpenCtx,
    *,
    say: Say,
    org: str | None = None,
    run: Run[Any] = asyncio.run,
) -> Landing:
    """Verify a status bundle against the site's pinned root and land its statuses."""
    from ._server import land_statuses, principal_for

    with verify(archive, trust, report=say) as b:
        if b.kind != "status":
            raise BundleError("this is a deployment bundle: use meshota bundle import")
        records = check_status_manifest(b.manifest)
        say(f"ok  status.json well-formed: {len(records)} status record(s) from site {b.manifest['site']!r}")

        async def go() -> Landing:
            async with open_ctx() as ctx:
                source: dict[str, Any] = {
                    k: b.manifest[k] for k in ("id", "site", "version") if k in b.manifest
                }
                return await land_statuses(ctx, await principal_for(ctx, org), records, source)

        landing: Landing = run(go())
        b.accept()
        return landing
