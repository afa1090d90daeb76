"""Fixtures of the node-side tests.

``artifacts``: real signed Mender artifacts (made once per session with ``mender-artifact``) for
the group-update harness (tests/support/update.py).
"""

from __future__ import annotations

import pytest

from tests.support.update import Artifacts, make_artifacts


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))
