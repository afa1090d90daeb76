"""README's main command runs end to end (small) and exits 0."""

from __future__ import annotations

import subprocess
import sys

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
