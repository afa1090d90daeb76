"""The receiving side: the pinned trust, and checking a bundle offline like a TUF client.

A *trust directory* holds what a site trusts and has accepted: python-tuf's client metadata
directory (``root.json`` and ``root_history/``, the last accepted ``timestamp.json``,
``snapshot.json``, ``targets.json``) plus ``imported.json`` (what was imported; see
meshota/bundle/_server.py). ``meshota bundle pin`` writes the first root there.

:func:`verify` runs python-tuf's ``Updater`` (the TUF 1.0 client workflow: root chain with both
thresholds per step, timestamp -> snapshot -> targets, versions never going back, expiry, length
and hashes) against the archive through :class:`ArchiveFetcher`, in a *copy* of the trust
directory; only :meth:`VerifiedBundle.accept` writes the new state back (after an import). Then
every member is checked against the signed targets: nothing missing, nothing extra, each
artifact's length and SHA-256 streamed from the archive.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig

from ._archive import ARCHIVE_URL, ArchiveFetcher, ArchiveIndex, ArchiveLimits, open_archive
from ._errors import BundleError, BundleUsageError

__all__ = ["VerifiedBundle", "pin_root", "trusted_versions", "verify"]

Report = Callable[[str], None]


def pin_root(trust_dir: Path, root_file: Path, limits: ArchiveLimits | None = None) -> Metadata[Root]:
    """Make ``root_file`` the trust anchor of ``trust_dir`` (which must not have one yet)."""
    limits = limits or ArchiveLimits()
    if (trust_dir / "root.json").exists() or (trust_dir / "root.json").is_symlink():
        raise BundleUsageError(f"{trust_dir} already pins a root; rotations arrive inside bundles")
    try:
        data = root_file.read_bytes()
    except OSError as exc:
        raise BundleUsageError(f"cannot read {root_file}: {exc.strerror}") from None
    if len(data) > limits.root_max:
        raise BundleUsageError(f"{root_file} is {len(data)} bytes, over the root limit {limits.root_max}")
    try:
        md = Metadata[Root].from_bytes(data)
        md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
    except Exception as exc:  # tuf raises several kinds; each means "not a usable root"
        raise BundleUsageError(f"{root_file} is not a self-signed TUF root: {_say(exc)}") from None
    trust_dir.mkdir(parents=True, exist_ok=True)
    (trust_dir / "root.json").write_bytes(data)
    return md


def trusted_versions(trust_dir: Path) -> dict[str, int]:
    """The versions a trust directory accepted last (root always; the others once imported)."""
    out: dict[str, int] = {}
    for role, cls in (("root", Root), ("timestamp", Timestamp), ("snapshot", Snapshot), ("targets", Targets)):
        path = trust_dir / f"{role}.json"
        if path.exists():
            out[role] = int(Metadata[cls].from_file(str(path)).signed.version)  # type: ignore[valid-type]
    return out


def _say(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@dataclass
class VerifiedBundle:
    """A bundle whose metadata and members all checked out, and the trust state it leads to."""

    index: ArchiveIndex
    kind: str  # "deployment" or "status"
    manifest: dict[str, Any]
    version: int
    targets: dict[str, Any]  # path -> TargetFile
    checks: list[str] = field(default_factory=list)
    workdir: Path | None = None
    trust_dir: Path | None = None
    new_state: bool = True

    def open_member(self, name: str) -> Any:
        return self.index.open(name)

    def accept(self) -> None:
        """Write the verified trust state back to the trust directory (after a good import)."""
        assert self.workdir is not None and self.trust_dir is not None
        history = self.workdir / "root_history"
        (self.trust_dir / "root_history").mkdir(exist_ok=True)
        for f in sorted(history.glob("*.root.json")):
            _replace(f, self.trust_dir / "root_history" / f.name)
        for role in ("timestamp", "snapshot", "targets"):
            if (self.workdir / f"{role}.json").exists():
                _replace(self.workdir / f"{role}.json", self.trust_dir / f"{role}.json")
        link = self.trust_dir / "root.json"
        target = os.readlink(self.workdir / "root.json")
        tmp = self.trust_dir / ".root.json.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)


def _replace(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@contextlib.contextmanager
def verify(
    archive: Path, trust_dir: Path, *, report: Report | None = None, limits: ArchiveLimits | None = None
) -> Iterator[VerifiedBundle]:
    """Check ``archive`` against ``trust_dir`` (see the module docstring); yields the verified
    bundle while its archive is open. Raises :class:`BundleError` with the first failed check."""
    say = report or (lambda line: None)
    limits = limits or ArchiveLimits()
    if not (trust_dir / "root.json").exists():
        raise BundleUsageError(f"{trust_dir} pins no root (meshota bundle pin --trust {trust_dir} ROOT.json)")
    with open(trust_dir / ".lock", "a+b") as lock:
        # one verify/import per trust directory at a time: the state it accepts stays consistent
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with _verify_locked(archive, trust_dir, say, limits) as bundle:
            yield bundle


@contextlib.contextmanager
def _verify_locked(
    archive: Path, trust_dir: Path, say: Report, limits: ArchiveLimits
) -> Iterator[VerifiedBundle]:
    before = trusted_versions(trust_dir)
    index = open_archive(archive, limits)
    try:
        say(
            f"ok  archive: {len(index.members)} members, regular files only, no links, "
            "all in the bundle layout"
        )
        with tempfile.TemporaryDirectory(prefix="meshota-bundle-trust-") as tmp:
            work = Path(tmp) / "trust"
            shutil.copytree(
                trust_dir, work, symlinks=True, ignore=shutil.ignore_patterns("imported.json", ".*")
            )
            targets_md = _refresh(index, work, limits, before, say)
            bundle = _check_members(index, targets_md, say)
            bundle.workdir, bundle.trust_dir = work, trust_dir
            bundle.new_state = targets_md.signed.version != before.get("targets")
            yield bundle
    finally:
        index.close()


def _refresh(
    index: ArchiveIndex, work: Path, limits: ArchiveLimits, before: dict[str, int], say: Report
) -> Metadata[Targets]:
    config = UpdaterConfig(
        max_root_rotations=limits.max_root_rotations,
        root_max_length=limits.root_max,
        timestamp_max_length=limits.timestamp_max,
        snapshot_max_length=limits.snapshot_max,
        targets_max_length=limits.targets_max,
        prefix_targets_with_hash=False,
    )
    fetcher = ArchiveFetcher(index)
    try:
        updater = Updater(
            str(work), ARCHIVE_URL + "metadata/", None, ARCHIVE_URL, fetcher, config, bootstrap=None
        )
        updater.refresh()
    except tuf_errors.ExpiredMetadataError as exc:
        raise BundleError(f"expired metadata (freeze attack or a stale bundle): {exc}") from None
    except tuf_errors.BadVersionNumberError as exc:
        raise BundleError(f"rollback: {exc}") from None
    except tuf_errors.UnsignedMetadataError as exc:
        raise BundleError(f"signature check failed (wrong, revoked or rotated key): {exc}") from None
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise BundleError(f"metadata does not match what signed it (mixed or tampered): {exc}") from None
    except tuf_errors.RepositoryError as exc:
        raise BundleError(f"metadata refused: {_say(exc)}") from None
    except tuf_errors.DownloadError as exc:
        raise BundleError(f"metadata missing or over its size limit: {_say(exc)}") from None
    except (ValueError, OSError) as exc:
        raise BundleError(f"metadata refused: {_say(exc)}") from None
    now = datetime.now(UTC)
    root = Metadata[Root].from_file(str(work / "root.json")).signed
    rotations = root.version - before["root"]
    chain = (
        f"v{before['root']} -> v{root.version} ({rotations} rotation(s))" if rotations else f"v{root.version}"
    )
    say(f"ok  root {chain}: each step signed by a threshold of the old and the new root keys")
    for role, cls in (("timestamp", Timestamp), ("snapshot", Snapshot), ("targets", Targets)):
        signed = Metadata[cls].from_file(str(work / f"{role}.json")).signed  # type: ignore[valid-type]
        last = before.get(role)
        since = "first import" if last is None else f"last accepted v{last}"
        days = (signed.expires - now).total_seconds() / 86400
        threshold = root.roles[role].threshold
        say(
            f"ok  {role} v{signed.version}: threshold {threshold} of {len(root.roles[role].keyids)} key(s), "
            f"expires {signed.expires:%Y-%m-%dT%H:%M:%SZ} (in {days:.1f} days), not older than {since}"
        )
    return Metadata[Targets].from_file(str(work / "targets.json"))


def _check_members(index: ArchiveIndex, targets_md: Metadata[Targets], say: Report) -> VerifiedBundle:
    targets = dict(targets_md.signed.targets)
    version = int(targets_md.signed.version)
    files = {n for n in index.members if not n.startswith("metadata/")}
    extra = sorted(files - set(targets))
    if extra:
        raise BundleError(f"archive member {extra[0]} is not in the signed targets (mixed or injected)")
    missing = sorted(set(targets) - files)
    if missing:
        raise BundleError(f"the bundle is missing {missing[0]} (listed in the signed targets)")
    kinds = [n for n in ("bundle.json", "status.json") if n in targets]
    if len(kinds) != 1:
        raise BundleError("a bundle carries exactly one of bundle.json and status.json")
    manifest_name = kinds[0]
    data = index.read(manifest_name)
    try:
        targets[manifest_name].verify_length_and_hashes(data)
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise BundleError(f"{manifest_name} was tampered with: {exc}") from None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{manifest_name} is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_name} is not a JSON object")
    if manifest.get("version") != version:
        raise BundleError(
            f"{manifest_name} says version {manifest.get('version')!r} but its signed metadata is v{version} "
            "(mixed from two bundles)"
        )
    say(f"ok  {manifest_name}: {len(data)} bytes, SHA-256 as signed, version {version}")
    for name in sorted(n for n in files if n.startswith("artifacts/")):
        with index.open(name) as fh:
            try:
                targets[name].verify_length_and_hashes(fh)
            except tuf_errors.LengthOrHashMismatchError as exc:
                raise BundleError(f"{name} was tampered with: {exc}") from None
        say(f"ok  {name}: {targets[name].length} bytes, SHA-256 as signed")
    kind = "deployment" if manifest_name == "bundle.json" else "status"
    return VerifiedBundle(index, kind, manifest, version, targets)
