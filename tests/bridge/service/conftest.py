"""bridge.service: the governance tests. ``mender_host``: the fixed paths the real mender-client
reads (identity script, artifact_info), as in tests/bridge/http (needs root)."""

from __future__ import annotations

import pytest

from tests.support.mender import install_mender_host


@pytest.fixture(scope="module")
def mender_host() -> None:
    install_mender_host()
