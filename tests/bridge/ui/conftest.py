"""bridge.ui: the admin UI, over HTTP (test_ui_http.py) and in Debian's chromium (test_ui_browser.py).

Servers are per module (tests/support/ui.py); the browser tests save a screenshot of every page
under test-output/ui/ (gitignored).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ui import UiFleet, start_ui_server


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiFleet]:
    """One server per test module: an admin, a read-only user, a second organisation's admin."""
    f = start_ui_server(tmp_path_factory.mktemp("ui"))
    try:
        yield f
    finally:
        f.server.stop()
