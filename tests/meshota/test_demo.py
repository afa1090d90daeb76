"""README's main command runs end to end (small) and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.integration
def test_demo_runs_and_every_node_answers() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "meshota", "demo", "--live", "--nodes", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all nodes answered: 6/6 replies" in r.stdout
    assert r.stdout.count("node-0") == 3


def test_demo_rejects_bad_node_count() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "meshota", "demo", "--nodes", "0"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--nodes" in r.stderr


def test_simulated_demo_reports_through_the_management_api(tmp_path: Path) -> None:
    """Default demo: the real Mender handlers on SQLite create the deployment, serve the signed
    artifact and chunk map, take every node's statuses; the management API counts them."""
    r = subprocess.run(
        [sys.executable, "-m", "meshota", "demo", "--nodes", "12", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    stats = re.search(r"management API .*/statistics: (.*)", r.stdout)
    assert stats is not None, r.stdout
    assert stats.group(1) == "success 13", r.stdout  # 12 nodes + the root, nothing else pending
    assert "server statistics say success 13/13" in r.stdout
    assert "0 tampered installs" in r.stdout
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "topology.png").is_file()


def test_simulated_demo_says_when_it_falls_back_without_mender_artifact(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from meshota.cli.demo import demo_main

    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "mender-artifact" else real(name)
    )
    assert demo_main(["--nodes", "4"]) == 0
    out = capsys.readouterr()
    assert "FALLING BACK to the in-memory server stand-in" in out.err
    assert "every node installed the signed image (in-memory server)" in out.out


def test_demo_runs_a_signed_update_and_exits_0(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "meshota", "demo", "--nodes", "8", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every node installed the signed image" in r.stdout
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "topology.png").exists()
