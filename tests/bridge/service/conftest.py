"""bridge.service: the governance tests. ``mender_host``: the fixed paths the real mender-client
reads (identity script, artifact_info), as in tests/bridge/http (needs root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mender import require_binary

IDENTITY = Path("/usr/share/mender/identity/mender-device-identity")
ARTIFACT_INFO = Path("/etc/mender/artifact_info")
IDENTITY_SCRIPT = """#!/bin/sh
# meshota test identity: one value per test run, from the environment
echo "mac=${MESHOTA_TEST_DEVICE_MAC:-02:00:00:00:00:01}"
"""


@pytest.fixture(scope="module")
def mender_host() -> None:
    require_binary("mender")
    try:
        IDENTITY.parent.mkdir(parents=True, exist_ok=True)
        if not IDENTITY.exists() or IDENTITY.read_text() != IDENTITY_SCRIPT:
            IDENTITY.write_text(IDENTITY_SCRIPT)
            IDENTITY.chmod(0o755)
        ARTIFACT_INFO.parent.mkdir(parents=True, exist_ok=True)
        if not ARTIFACT_INFO.exists():
            ARTIFACT_INFO.write_text("artifact_name=initial-artifact\n")
    except PermissionError as exc:
        pytest.fail(f"mender-client needs files at fixed paths (run as root): {exc}")
