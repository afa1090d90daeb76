"""The real mender-cli 1.9 against our server: login, artifacts upload/list/delete, devices list."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.mender import ADMIN, RunningServer, device_key, device_login, make_artifact, require_binary


def cli(running: RunningServer, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = require_binary("mender-cli")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    return subprocess.run(
        [tool, "--server", running.url, *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=home,
    )  # fmt: skip


def test_login_upload_list_delete_devices(running: RunningServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    bad = cli(running, home, "login", "--username", ADMIN[0], "--password", "wrong-password")
    assert bad.returncode != 0 and "401" in bad.stderr + bad.stdout
    ok = cli(running, home, "login", "--username", ADMIN[0], "--password", ADMIN[1])
    assert ok.returncode == 0, ok.stderr
    assert "login successful" in ok.stdout + ok.stderr

    art = make_artifact(tmp_path, "cli-artifact")
    up = cli(running, home, "artifacts", "upload", "--no-progress", "--description", "from cli",
             str(art))  # fmt: skip
    assert up.returncode == 0, up.stderr
    again = cli(running, home, "artifacts", "upload", "--no-progress", str(art))
    assert again.returncode != 0  # 409: same name and device type

    listed = cli(running, home, "artifacts", "list", "-d", "3")
    assert listed.returncode == 0, listed.stderr
    assert "cli-artifact" in listed.stdout and "from cli" in listed.stdout
    with running.client() as c:
        [meta] = c.get("/api/management/v1/deployments/artifacts").json()
    assert meta["id"] in listed.stdout

    device_login(running.url, device_key("rsa"), "02:00:00:00:00:42")
    devices = cli(running, home, "devices", "list", "-d", "3")
    assert devices.returncode == 0, devices.stderr
    assert "pending" in devices.stdout and "02:00:00:00:00:42" in devices.stdout

    deleted = cli(running, home, "artifacts", "delete", meta["id"])
    assert deleted.returncode == 0, deleted.stderr
    with running.client() as c:
        assert c.get("/api/management/v1/deployments/artifacts").json() == []
    assert not list((running.artifacts_dir / "objects").glob("*/*"))
