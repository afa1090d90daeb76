"""README's main command (the simulated demo) and ``demo --live`` run end to end (small), exit 0."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_proto import boot as bootmod
from firmware_proto.flash_store import FileFlash


@pytest.mark.integration
def test_live_demo_is_a_real_ota_over_loopback(tmp_path: Path) -> None:
    """``demo --live``: server side, relay and nodes as real processes/sockets; the run's files
    are kept in --out, so the test reads the server's database and every node's flash itself."""
    nodes = 5
    r = subprocess.run(
        [sys.executable, "-m", "meshota", "demo", "--live", "--nodes", str(nodes), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"every node installed the signed image: server statistics say success {nodes}/{nodes}" in out
    stats = re.search(r"management API .*/deployments/([0-9a-f-]{36})/statistics: (.*)", out)
    assert stats is not None and stats.group(2) == f"success {nodes}", out
    assert f"{nodes + 1} devices over DTLS (PSK) through the relay: {nodes + 1} pending (401)" in out
    assert re.search(rf"{nodes * 4} sealed status records in \d+ batches through the root \(0 sent", out), out
    # every node reported its inventory after each of its two boots, and was counted once
    assert f"{nodes * 2} inventory reports at level minimal" in out, out
    counted = re.search(
        r"counting  the root counted (\d+) devices .*repeated reports\): (.*); after the week", out
    )
    assert counted is not None and counted.group(1) == str(nodes + 1), out
    # a device reports within the first seconds of the week (2 s spread in the demo) with the
    # version it runs at that moment: before or after its install, depending on timing
    cells = dict(c.rsplit(": ", 1) for c in counted.group(2).split(", "))
    assert set(cells) <= {f"demo-firmware-{v}/meshota-sim/age 1" for v in ("1.0", "2.0")}, out
    assert sum(int(n) for n in cells.values()) == nodes + 1, out
    rows = re.findall(
        r"^(node-\d\d) +([0-9a-f]{8}) +(\S+) +(\d+)  slot 1: demo-firmware-2.0, signature ok$", out, re.M
    )
    assert len(rows) == nodes and all(
        status == "success" and int(chunks) > 0 for _, _, status, chunks in rows
    ), out

    # the server's own record: every target of the deployment finished with success
    db = sqlite3.connect(tmp_path / "server" / "meshota.db")
    try:
        statuses = db.execute(
            "SELECT status FROM device_deployments WHERE deployment_id = ?", (stats.group(1),)
        ).fetchall()
    finally:
        db.close()
    assert sorted(s for (s,) in statuses) == ["success"] * nodes

    # the root's progress reports over its MQTT-SN session: the management API's mesh view (its
    # answer kept in mesh-view.json) shows one stream, reported by the root, that lists every
    # target of the deployment as done, ended complete, with what the root put on air
    db = sqlite3.connect(tmp_path / "server" / "meshota.db")
    try:
        query = "SELECT device_id FROM device_deployments WHERE deployment_id = ?"
        targets = {d for (d,) in db.execute(query, (stats.group(1),))}
    finally:
        db.close()
    view = json.loads((tmp_path / "mesh-view.json").read_text())
    (stream,) = view["reported_by_roots"]
    assert stream["artifact_name"] == "demo-firmware-2.0"
    (top,) = stream["roots"]
    assert top["root"] not in targets and top["reported_by"] == f"root {top['root']}"
    assert top["final"] and top["complete"] and top["members"] == nodes, top
    assert {n["id"]: (n["state"], n["missing"], n["held"]) for n in top["nodes"]} == dict.fromkeys(
        targets, ("done", 0, top["blocks"])
    ), top
    assert top["blocks"] > 0 and top["bytes_on_air"] > 0 and top["frames_on_air"] >= top["blocks"], top
    line = re.search(r"mesh view GET /api/meshota/v1/management/mesh: (\d+) progress reports .*", out)
    assert line is not None and int(line.group(1)) >= 1 and "refused" not in line.group(0), out
    shown = rf"reported by root root-0: {nodes} nodes \({nodes} listed: done {nodes}\), .* ended complete$"
    assert re.search(shown, out, re.M), out

    # every node's flash, read back from its files: the update confirmed in the active slot
    image = (tmp_path / "artifacts" / "demo-firmware-2.0.mender").read_bytes()
    for i in range(1, nodes + 1):
        node_dir = tmp_path / "nodes" / f"node-{i:02d}"
        flash = FileFlash(node_dir, (node_dir / "slot0.bin").stat().st_size)
        state = bootmod.read_boot(flash)
        assert state.trial is None and bootmod.slot_image(flash, state.active) == image, node_dir
        info = bootmod.read_slot_info(flash, state.active)
        assert info is not None and info.artifact_name == "demo-firmware-2.0"


def test_live_demo_rejects_too_many_nodes() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "meshota", "demo", "--live", "--nodes", "101"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--nodes 101 is not in 1..100 with --live" in r.stderr


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
