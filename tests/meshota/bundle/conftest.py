"""Bundles between two in-process servers (tests/support/bundles.py); needs mender-artifact."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bundles import World, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if shutil.which("mender-artifact") is None:
        pytest.skip("mender-artifact is not installed (scripts/setup.sh installs it)")
    w = make_world(Path(tmp_path_factory.mktemp("bundle-world")))
    yield w
    w.close()
