"""The signing side: keys, the root and its rotations, and signing one bundle's metadata.

Everything TUF is python-tuf's metadata API (``tuf.api.metadata``); every key and signature is
securesystemslib's ``CryptoSigner`` (Ed25519, PKCS#8 PEM). Two directories, kept apart:

``--repo DIR`` (the online part, at the exporting server)::

    repo.json                 the last signed versions of targets/snapshot/timestamp
    online/<keyid>.pem        the online keys (targets, snapshot, timestamp)
    root_history/<N>.root.json  every root version, 1..N (carried in every bundle)

``--root-keys DIR`` (the offline part: removable media, used only to create or rotate the root)::

    <keyid>.pem               the root keys; a rotation moves replaced keys to retired/
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from ._errors import BundleError, BundleUsageError

__all__ = ["ONLINE_ROLES", "BundleMember", "SigningRepo", "load_signers"]

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
_SERIALIZER = JSONSerializer(compact=False)
_CHUNK = 1 << 20


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_signers(directory: Path) -> dict[str, CryptoSigner]:
    """keyid -> signer for every ``*.pem`` private key in ``directory`` (not retired/)."""
    if not directory.is_dir():
        raise BundleUsageError(f"no such key directory: {directory}")
    signers: dict[str, CryptoSigner] = {}
    for pem in sorted(directory.glob("*.pem")):
        try:
            signer = CryptoSigner(load_pem_private_key(pem.read_bytes(), None))
        except (ValueError, TypeError, OSError) as exc:
            raise BundleUsageError(f"cannot load key {pem}: {exc}") from None
        signers[signer.public_key.keyid] = signer
    return signers


def _new_signers(directory: Path, count: int) -> list[CryptoSigner]:
    out = []
    for _ in range(count):
        signer = CryptoSigner.generate_ed25519()
        _write_private(directory / f"{signer.public_key.keyid}.pem", signer.private_bytes)
        out.append(signer)
    return out


def _sign(
    md: Metadata[Root] | Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp],
    signers: dict[str, CryptoSigner],
    keyids: Sequence[str],
    threshold: int,
    what: str,
) -> None:
    usable = [signers[k] for k in keyids if k in signers]
    if len(usable) < threshold:
        raise BundleUsageError(
            f"{what} needs {threshold} signature(s) but only {len(usable)} of its keys are at hand"
        )
    for signer in usable:
        md.sign(signer, append=True)


@dataclass(frozen=True, slots=True)
class BundleMember:
    """One file of a bundle: its archive name and where its bytes come from (a file is streamed
    into the archive and hashed on the way; ``sha256`` is what the file must hash to)."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    sha256: str | None = None


class _HashingReader:
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.hash = hashlib.sha256()
        self.length = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.hash.update(data)
        self.length += len(data)
        return data


class SigningRepo:
    """The exporting side's TUF repository (see the module docstring for the layout)."""

    def __init__(self, repo_dir: Path) -> None:
        self.dir = repo_dir
        if not (repo_dir / "repo.json").is_file():
            raise BundleUsageError(f"{repo_dir} is not a bundle signing repository (meshota bundle init)")

    # -- creation and rotation -------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        repo_dir: Path,
        root_keys_dir: Path,
        *,
        root_keys: int = 1,
        root_threshold: int = 1,
        online_keys: int = 1,
        online_threshold: int = 1,
        root_expires: timedelta = timedelta(days=365),
    ) -> SigningRepo:
        if (repo_dir / "repo.json").exists():
            raise BundleUsageError(f"{repo_dir} already holds a signing repository")
        for n, t, what in ((root_keys, root_threshold, "root"), (online_keys, online_threshold, "online")):
            if not 1 <= t <= n <= 16:
                raise BundleUsageError(f"{what} threshold {t} of {n} keys: need 1 <= threshold <= keys <= 16")
        root_keys_dir.mkdir(parents=True, exist_ok=True)
        roots = _new_signers(root_keys_dir, root_keys)
        onlines = _new_signers(repo_dir / "online", online_keys)
        root = Root(expires=_expiry(root_expires), consistent_snapshot=False)
        for s in roots:
            root.add_key(s.public_key, "root")
        for s in onlines:
            for role in ONLINE_ROLES:
                root.add_key(s.public_key, role)
        root.roles["root"].threshold = root_threshold
        for role in ONLINE_ROLES:
            root.roles[role].threshold = online_threshold
        md = Metadata(root)
        _sign(md, {s.public_key.keyid: s for s in roots}, root.roles["root"].keyids, root_threshold, "root")
        (repo_dir / "root_history").mkdir(parents=True, exist_ok=True)
        (repo_dir / "root_history" / "1.root.json").write_bytes(md.to_bytes(_SERIALIZER))
        state = {"versions": {role: 0 for role in ONLINE_ROLES}}
        _atomic_write(repo_dir / "repo.json", json.dumps(state, indent=2).encode())
        return cls(repo_dir)

    def root_versions(self) -> list[int]:
        found = sorted(int(p.name.split(".")[0]) for p in (self.dir / "root_history").glob("*.root.json"))
        if not found or found != list(range(1, len(found) + 1)):
            raise BundleUsageError(f"{self.dir}/root_history is not a chain 1..N of root versions")
        return found

    def root(self) -> Metadata[Root]:
        n = self.root_versions()[-1]
        return Metadata[Root].from_file(str(self.dir / "root_history" / f"{n}.root.json"))

    def rotate_root(
        self,
        root_keys_dir: Path,
        *,
        new_root_keys: int = 0,
        root_threshold: int | None = None,
        new_online_keys: int = 0,
        online_threshold: int | None = None,
        revoke: Sequence[str] = (),
        root_expires: timedelta = timedelta(days=365),
    ) -> int:
        """Write root N+1, signed by a threshold of root N's keys and of its own; its version."""
        old_md = self.root()
        old = old_md.signed
        signers = load_signers(root_keys_dir)
        md = Metadata[Root].from_bytes(old_md.to_bytes())
        new = md.signed
        new.version = old.version + 1
        new.expires = _expiry(root_expires)
        md.signatures.clear()
        retired_root: list[str] = []
        if new_root_keys:
            retired_root = list(new.roles["root"].keyids)
            for keyid in retired_root:
                new.revoke_key(keyid, "root")
            for s in _new_signers(root_keys_dir, new_root_keys):
                new.add_key(s.public_key, "root")
                signers[s.public_key.keyid] = s
        retired_online: list[str] = []
        if new_online_keys:
            retired_online = list(new.roles["timestamp"].keyids)
            for keyid in retired_online:
                for role in ONLINE_ROLES:
                    new.revoke_key(keyid, role)
            for s in _new_signers(self.dir / "online", new_online_keys):
                for role in ONLINE_ROLES:
                    new.add_key(s.public_key, role)
        for keyid in revoke:
            roles = [r for r, role in new.roles.items() if keyid in role.keyids]
            if not roles:
                raise BundleUsageError(f"key {keyid} is in no role of root v{old.version}")
            for r in roles:
                new.revoke_key(keyid, r)
        if root_threshold is not None:
            new.roles["root"].threshold = root_threshold
        if online_threshold is not None:
            for role_name in ONLINE_ROLES:
                new.roles[role_name].threshold = online_threshold
        for role_name, spec in new.roles.items():
            if not 1 <= spec.threshold <= len(spec.keyids):
                raise BundleUsageError(
                    f"role {role_name}: threshold {spec.threshold} but {len(spec.keyids)} key(s) "
                    "after the rotation"
                )
        keyids = list(dict.fromkeys([*old.roles["root"].keyids, *new.roles["root"].keyids]))
        usable = {k: signers[k] for k in keyids if k in signers}
        for s in usable.values():
            md.sign(s, append=True)
        # both thresholds, checked the way a client will (tuf's own verification)
        result = new.get_root_verification_result(old, md.signed_bytes, md.signatures)
        for who, part in ((f"root v{old.version}", result.first), (f"root v{new.version}", result.second)):
            if not part.verified:
                raise BundleUsageError(
                    f"{who}'s root threshold ({part.threshold}) is not met by the keys in {root_keys_dir}"
                )
        path = self.dir / "root_history" / f"{new.version}.root.json"
        _atomic_write(path, md.to_bytes(_SERIALIZER))
        for keyid in retired_root:
            _retire(root_keys_dir, keyid)
        for keyid in [*retired_online, *revoke]:
            _retire(self.dir / "online", keyid)
            _retire(root_keys_dir, keyid)
        return int(new.version)

    # -- one bundle --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, int]]:
        """The versions file, held exclusively (two exports never sign the same version)."""
        with open(self.dir / "repo.json", "r+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            versions: dict[str, int] = json.loads(fh.read())["versions"]
            yield versions

    def write_bundle(
        self,
        out: Path,
        members: Sequence[BundleMember],
        *,
        versions: dict[str, int],
        expires: datetime,
    ) -> int:
        """Write the archive ``out`` (members, signed metadata, the root chain); returns the
        targets version. ``versions`` comes from :meth:`locked` and is advanced on success."""
        root = self.root()
        signers = load_signers(self.dir / "online")
        version = max(versions.values()) + 1
        tmp = out.with_name(f".{out.name}.partial")
        targets: dict[str, TargetFile] = {}
        try:
            with tarfile.open(tmp, mode="w:", format=tarfile.PAX_FORMAT) as tar:
                for m in members:
                    targets[m.name] = _add_member(tar, m)
                signed_targets = Metadata(Targets(version=version, expires=expires, targets=targets))
                role = root.signed.roles["targets"]
                _sign(signed_targets, signers, role.keyids, role.threshold, "targets")
                t_bytes = signed_targets.to_bytes(_SERIALIZER)
                snapshot = Metadata(
                    Snapshot(
                        version=version, expires=expires, meta={"targets.json": _metafile(version, t_bytes)}
                    )
                )
                role = root.signed.roles["snapshot"]
                _sign(snapshot, signers, role.keyids, role.threshold, "snapshot")
                s_bytes = snapshot.to_bytes(_SERIALIZER)
                timestamp = Metadata(
                    Timestamp(version=version, expires=expires, snapshot_meta=_metafile(version, s_bytes))
                )
                role = root.signed.roles["timestamp"]
                _sign(timestamp, signers, role.keyids, role.threshold, "timestamp")
                for n in self.root_versions():
                    data = (self.dir / "root_history" / f"{n}.root.json").read_bytes()
                    _add_member(tar, BundleMember(f"metadata/{n}.root.json", data=data))
                _add_member(tar, BundleMember("metadata/targets.json", data=t_bytes))
                _add_member(tar, BundleMember("metadata/snapshot.json", data=s_bytes))
                _add_member(
                    tar, BundleMember("metadata/timestamp.json", data=timestamp.to_bytes(_SERIALIZER))
                )
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        for role_name in ONLINE_ROLES:
            versions[role_name] = version
        _atomic_write(self.dir / "repo.json", json.dumps({"versions": versions}, indent=2).encode())
        return version

    def next_version(self, versions: dict[str, int]) -> int:
        return max(versions.values()) + 1


def _retire(directory: Path, keyid: str) -> None:
    pem = directory / f"{keyid}.pem"
    if pem.exists():
        (directory / "retired").mkdir(exist_ok=True)
        shutil.move(str(pem), str(directory / "retired" / pem.name))


def _metafile(version: int, data: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def _add_member(tar: tarfile.TarFile, m: BundleMember) -> TargetFile:
    info = tarfile.TarInfo(m.name)
    info.mtime = int(time.time())
    info.mode = 0o644
    if m.data is not None:
        import io

        info.size = len(m.data)
        tar.addfile(info, io.BytesIO(m.data))
        return TargetFile.from_data(m.name, m.data)
    assert m.path is not None
    with m.path.open("rb") as fh:
        info.size = os.fstat(fh.fileno()).st_size
        reader = _HashingReader(fh)
        tar.addfile(info, reader)  # streamed: tarfile reads it in chunks
    digest = reader.hash.hexdigest()
    if reader.length != info.size or (m.sha256 is not None and digest != m.sha256):
        raise BundleError(f"{m.path} changed or does not hash to {m.sha256} while it was exported")
    return TargetFile(info.size, {"sha256": digest}, m.name)


def _expiry(delta: timedelta) -> datetime:
    return (datetime.now(UTC) + delta).replace(microsecond=0)
