"""Content-addressed artifact files: ``objects/<sha256[:2]>/<sha256>`` under one directory.

Uploads land in ``tmp/`` first and are renamed into place only after they were checked, so a
failed or interrupted upload never leaves a file where the store would look. A staging file is
held under an exclusive ``flock`` while it is in use; :meth:`BlobStore.remove_leftovers` (run at
server startup) deletes every staging file nobody holds — what a crash or kill left behind —
without touching an upload another process (``meshota admin``, a second server) is writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BlobStore"]

log = logging.getLogger(__name__)
_STAGING_PREFIX = "upload-"


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.objects / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A temporary file in the store's own filesystem; removed unless committed."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=_STAGING_PREFIX)
        path = Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # "in use": remove_leftovers() leaves it alone
            yield path
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def remove_leftovers(self) -> int:
        """Delete staging files no live upload holds (left by a crash or kill); how many went."""
        removed = 0
        for path in self.tmp.glob(f"{_STAGING_PREFIX}*"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # gone meanwhile, or not a plain file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # an upload in progress (this or another process)
            else:
                path.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
        if removed:
            log.info("removed %d leftover artifact staging file(s) from %s", removed, self.tmp)
        return removed

    def commit(self, staged: Path, sha256: str) -> Path:
        """Move a checked staging file to its content address (atomic rename)."""
        target = self.path(sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(staged, target)
        return target

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def listing(self) -> list[str]:
        return sorted(p.name for p in self.objects.glob("*/*") if p.is_file())
