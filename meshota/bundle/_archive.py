"""The bundle archive: an uncompressed tar with a fixed layout, read by index, streamed.

Layout (nothing else is accepted)::

    bundle.json | status.json           the manifest (deployment bundle) or the statuses (status bundle)
    artifacts/<sha256>.mender           flat, content-addressed (deployment bundles only)
    metadata/<N>.root.json              the root chain, 1..N (TUF root rotation)
    metadata/timestamp.json, snapshot.json, targets.json

Reading builds an index of the members first (the tar headers only: members are skipped by
seeking, never read whole) and refuses, with one line: a link or any member that is not a regular
file, a name outside the layout (``..``, an absolute path), a duplicate, too many members, a
member over its size limit. :class:`ArchiveFetcher` then serves members to python-tuf's updater
as if they were URLs, in chunks.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface

from ._errors import BundleError

__all__ = [
    "ARCHIVE_URL",
    "ArchiveFetcher",
    "ArchiveIndex",
    "ArchiveLimits",
    "open_archive",
]

ARCHIVE_URL = "meshota-bundle:"  # the "base URL" the updater is given; members follow it
_CHUNK = 1 << 20
_NAME = re.compile(
    r"(bundle\.json|status\.json|artifacts/[0-9a-f]{64}\.mender"
    r"|metadata/(?:[1-9][0-9]{0,5}\.root|timestamp|snapshot|targets)\.json)"
)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Size limits on every input (docs/bundles.md, "Limits")."""

    max_members: int = 4096
    max_root_rotations: int = 256
    root_max: int = 512 * 1024
    timestamp_max: int = 16 * 1024
    snapshot_max: int = 1 << 20
    targets_max: int = 4 << 20
    manifest_max: int = 4 << 20  # bundle.json
    status_max: int = 64 << 20  # status.json
    artifact_max: int = 16 << 30  # one artifact

    def member_max(self, name: str) -> int:
        if name.startswith("artifacts/"):
            return self.artifact_max
        if name.endswith(".root.json"):
            return self.root_max
        return {
            "bundle.json": self.manifest_max,
            "status.json": self.status_max,
            "metadata/timestamp.json": self.timestamp_max,
            "metadata/snapshot.json": self.snapshot_max,
            "metadata/targets.json": self.targets_max,
        }[name]


class ArchiveIndex:
    """The checked member table of one open archive; members are read through it, streamed."""

    def __init__(self, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], limits: ArchiveLimits):
        self._tar = tar
        self.members = members
        self.limits = limits

    def names(self) -> list[str]:
        return sorted(self.members)

    def size(self, name: str) -> int:
        return int(self.members[name].size)

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        if member is None:
            raise BundleError(f"the archive has no member {name}")
        fh = self._tar.extractfile(member)
        assert fh is not None  # regular files only (checked when indexed)
        return fh

    def read(self, name: str) -> bytes:
        """A small member whole (metadata, manifests: each under its limit)."""
        with self.open(name) as fh:
            return fh.read(self.limits.member_max(name) + 1)

    def close(self) -> None:
        self._tar.close()


def _check_member(info: tarfile.TarInfo, limits: ArchiveLimits) -> str:
    name = info.name
    if info.issym() or info.islnk():
        raise BundleError(f"archive member {name!r} is a link; links are refused")
    if not info.isreg():
        raise BundleError(f"archive member {name!r} is not a regular file")
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise BundleError(f"archive member {name!r} leaves the bundle (path traversal)")
    if not _NAME.fullmatch(name):
        raise BundleError(f"archive member {name!r} is not part of the bundle layout")
    if name.endswith(".root.json") and int(name.split("/")[1].split(".")[0]) > limits.max_root_rotations + 1:
        raise BundleError(f"archive member {name!r}: root versions above {limits.max_root_rotations + 1}")
    if info.size > limits.member_max(name):
        raise BundleError(
            f"archive member {name} is {info.size} bytes, over its limit {limits.member_max(name)}"
        )
    return name


def open_archive(path: Path, limits: ArchiveLimits | None = None) -> ArchiveIndex:
    """Index ``path`` (headers only) and check every member; the caller closes the index."""
    limits = limits or ArchiveLimits()
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - ArchiveIndex owns and closes it
    except FileNotFoundError:
        raise BundleError(f"no such bundle file: {path}") from None
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{path} is not a bundle archive (an uncompressed tar): {exc}") from None
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for count, info in enumerate(tar, start=1):
            if count > limits.max_members:
                raise BundleError(f"the archive has more than {limits.max_members} members")
            name = _check_member(info, limits)
            if name in members:
                raise BundleError(f"archive member {name!r} appears twice")
            members[name] = info
    except tarfile.TarError as exc:
        tar.close()
        raise BundleError(f"the archive is damaged: {exc}") from None
    except BaseException:
        tar.close()
        raise
    if not members:
        tar.close()
        raise BundleError("the archive is empty")
    return ArchiveIndex(tar, members, limits)


class ArchiveFetcher(FetcherInterface):
    """python-tuf's fetcher over an archive: ``meshota-bundle:<member>`` -> the member's bytes.

    A missing member is a 404, which is how the updater learns where the root chain ends."""

    def __init__(self, index: ArchiveIndex) -> None:
        self.index = index

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(ARCHIVE_URL):
            raise DownloadHTTPError(f"not a bundle member: {url}", 404)
        name = url[len(ARCHIVE_URL) :]
        if name not in self.index.members:
            raise DownloadHTTPError(f"the bundle has no {name}", 404)
        return self._chunks(name)

    def _chunks(self, name: str) -> Iterator[bytes]:
        with self.index.open(name) as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
