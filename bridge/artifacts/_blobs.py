"""Content-addressed artifact files: ``objects/<sha256[:2]>/<sha256>`` under one directory.

Uploads land in ``tmp/`` first and are renamed into place only after they were checked, so a
failed or interrupted upload never leaves a file where the store would look.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BlobStore"]


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
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

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
