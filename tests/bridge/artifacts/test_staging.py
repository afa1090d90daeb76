"""Artifact staging files: a crash leaves them behind, server startup removes them (issue 12,
item 9) — but never one a live upload (this or another process) still holds."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from bridge.artifacts import BlobStore
from bridge.http import BackgroundServer, ServerConfig


def _leftover(store: BlobStore, name: str, size: int = 1000) -> Path:
    """What a killed upload leaves: a staging file nobody holds any more."""
    path = store.tmp / name
    path.write_bytes(os.urandom(size))
    return path


def _hold_staging(root: Path, ready: Any, done: Any, out: Any) -> None:
    store = BlobStore(root)
    with store.staging() as staged:
        staged.write_bytes(b"half an upload")
        out.put(str(staged))
        ready.set()
        done.wait(30)


def test_server_startup_removes_leftover_staging_files(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = BlobStore(root)
    stale = [_leftover(store, f"upload-crash{i}") for i in range(3)]
    other = store.tmp / "not-ours.txt"  # only the store's own staging files are touched
    other.write_text("keep")
    # an upload in progress in another process (meshota admin, a second server) holds its file
    ctx = multiprocessing.get_context("spawn")
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_hold_staging, args=(root, ready, done, out))
    proc.start()
    try:
        assert ready.wait(60), "helper process did not start"
        live = Path(out.get(timeout=10))
        config = ServerConfig(f"sqlite:///{tmp_path / 'db.sqlite'}", root, port=0)
        with BackgroundServer(config):
            assert not any(p.exists() for p in stale)
            assert live.exists() and other.exists()
    finally:
        done.set()
        proc.join(30)
    assert not live.exists()  # its own upload removed it when done


def test_remove_leftovers_counts_and_spares_held_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    _leftover(store, "upload-a")
    _leftover(store, "upload-b")
    with store.staging() as held:
        held.write_bytes(b"in use")
        assert store.remove_leftovers() == 2
        assert held.exists()
        assert sorted(p.name for p in store.tmp.iterdir()) == [held.name]
    assert store.remove_leftovers() == 0 and list(store.tmp.iterdir()) == []
