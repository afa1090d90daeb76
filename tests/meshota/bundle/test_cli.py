"""``meshota bundle`` as an operator runs it, in real processes against the servers' SQLite
files: init, pin, export, verify, import --dry-run, import (twice), status-export, status-import,
rotate-root; exit codes 0 / 1 (refused, one line) / 2 (usage, one line)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.bundles import World, counts, member, rewrite


def meshota(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    return subprocess.run(
        [sys.executable, "-m", "meshota", "bundle", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def server(w: World, which: str) -> list[str]:
    s = w.a if which == "A" else w.b
    return ["--db", f"sqlite:///{s.db_path}", "--artifacts", str(s.workdir / "artifacts")]


def ok(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def refused(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    lines = r.stderr.splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and text in lines[0], lines


def test_operator_round_trip(world: World, tmp_path: Path) -> None:
    repo, keys, trust = tmp_path / "repo", tmp_path / "root-keys", tmp_path / "trust"
    vendor = tmp_path / "vendor.pem"
    vendor.write_bytes(
        world.a.vendor_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ok(meshota("init", "--repo", repo, "--root-keys", keys, "--root-key-count", "2", "--root-threshold", "2"))
    assert oct((keys / next(p.name for p in keys.glob("*.pem"))).stat().st_mode)[-3:] == "600"
    ok(meshota("pin", "--trust", trust, repo / "root_history" / "1.root.json"))
    bundle = tmp_path / "site.tar"
    out = ok(meshota("export", *server(world, "A"), "--repo", repo, "--deployment", world.deployment,
                     "--expires", "30d", "-o", bundle))  # fmt: skip
    assert "1 artifact(s), 1 deployment(s)" in out[-1]

    lines = ok(meshota("verify", "--trust", trust, bundle))
    for check in ("ok  archive", "ok  root v1", "ok  timestamp v1", "ok  snapshot v1", "ok  targets v1",
                  "ok  bundle.json", "ok  artifacts/", "mix-and-match", "verified"):  # fmt: skip
        assert any(line.startswith(check) or check in line for line in lines), (check, lines)

    before = counts(world.b)
    lines = ok(meshota("import", *server(world, "B"), "--trust", trust, "--dry-run", bundle))
    assert lines[-1] == "dry run: nothing was imported"
    assert any(f"create for {world.nodes} device(s)" in line for line in lines), lines
    assert counts(world.b) == before and not (trust / "timestamp.json").exists()

    lines = ok(meshota("import", *server(world, "B"), "--trust", trust, "--verify-key", vendor, bundle))
    assert any("relocated into the artifact store" in line for line in lines), lines
    assert counts(world.b) == (before[0] + 1, before[1] + 1, before[2] + 1)
    lines = ok(meshota("import", *server(world, "B"), "--trust", trust, "--verify-key", vendor, bundle))
    assert lines[-1] == "already imported: nothing to do"
    assert counts(world.b) == (before[0] + 1, before[1] + 1, before[2] + 1)

    # a tampered copy: exit 1, one line, whatever the command
    with tarfile.open(bundle) as tar:
        name = next(n for n in tar.getnames() if n.startswith("artifacts/"))
    data = bytearray(member(bundle, name))
    data[-1] ^= 0xFF
    bad = rewrite(bundle, tmp_path / "bad.tar", replace={name: bytes(data)})
    refused(meshota("verify", "--trust", trust, bad), 1, "meshota bundle verify: refused: ")
    refused(meshota("import", *server(world, "B"), "--trust", trust, bad), 1, "was tampered with")

    # the status bundle back (nothing ran at B: every device is still pending there)
    site_repo, site_keys, site_trust = tmp_path / "site-repo", tmp_path / "site-keys", tmp_path / "site-trust"
    ok(meshota("init", "--repo", site_repo, "--root-keys", site_keys))
    ok(meshota("pin", "--trust", site_trust, site_repo / "root_history" / "1.root.json"))
    status = tmp_path / "status.tar"
    lines = ok(meshota("status-export", *server(world, "B"), "--trust", trust, "--repo", site_repo,
                       "--site", "rig-7", "--since", "7d", "-o", status))  # fmt: skip
    assert f"{world.nodes} status record(s)" in lines[-1]
    lines = ok(meshota("status-import", *server(world, "A"), "--trust", site_trust, status))
    assert lines[-1].startswith(
        f"0 status(es) landed, 0 already known, 0 log(s) kept, {world.nodes} still pending"
    )
    refused(
        meshota("status-import", *server(world, "A"), "--trust", trust, status), 1, "signature check failed"
    )
    refused(meshota("import", *server(world, "A"), "--trust", site_trust, status), 1, "status bundle")

    # rotation: two root keys now sign, the next bundle carries root v2, the site follows
    ok(meshota("rotate-root", "--repo", repo, "--root-keys", keys, "--new-online-keys", "1"))
    bundle2 = tmp_path / "site-2.tar"
    ok(meshota("export", *server(world, "A"), "--repo", repo, "--deployment", world.deployment,
               "--expires", "1d", "-o", bundle2))  # fmt: skip
    lines = ok(meshota("verify", "--trust", trust, bundle2))
    assert any("v1 -> v2 (1 rotation(s))" in line for line in lines), lines


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["verify", "--trust", "{tmp}/nothing", "{tmp}/b.tar"], "pins no root"),
        (
            ["init", "--repo", "{tmp}/r", "--root-keys", "{tmp}/k", "--root-threshold", "3"],
            "threshold 3 of 1",
        ),
        (
            [
                "export",
                "--db",
                "sqlite:///{tmp}/x.db",
                "--artifacts",
                "{tmp}/a",
                "--repo",
                "{tmp}/r",
                "--deployment",
                "d",
                "--expires",
                "soon",
                "-o",
                "{tmp}/o.tar",
            ],
            "is not a bundle signing repository",
        ),
        (
            [
                "export",
                "--db",
                "bogus://",
                "--artifacts",
                "{tmp}/a",
                "--repo",
                "{tmp}/r",
                "--deployment",
                "d",
                "--expires",
                "30d",
                "-o",
                "{tmp}/o.tar",
            ],
            "bad --db value",
        ),
        (["rotate-root", "--repo", "{tmp}/r", "--root-keys", "{tmp}/k"], "not a bundle signing repository"),
        (["pin", "--trust", "{tmp}/t", "{tmp}/missing.json"], "cannot read"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], text: str, tmp_path: Path) -> None:
    r = meshota(*[a.format(tmp=tmp_path) for a in argv])
    refused(r, 2, text)
    assert r.stderr.startswith("meshota bundle "), r.stderr


def test_signing_and_verifying_load_no_server_code() -> None:
    """verify runs on an offline laptop: meshota.bundle and its verify path import no bridge."""
    code = (
        "import sys, meshota.bundle, meshota.cli.bundle\n"
        "from meshota.bundle import verify, SigningRepo, pin_root\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'bridge', 'sqlalchemy', 'mbedtls'}))\n"
        "meshota.bundle.ImportLog\n"
        "print('bridge' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.split("\n")[:2] == ["[]", "True"], (r.stdout, r.stderr)
