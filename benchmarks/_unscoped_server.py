"""Benchmarks only (``--compare-scoping``): ``meshota server`` with the permission checks and the
tenant scoping switched off, to measure what they cost against the real server in the same run.

The product has no such switch; this launcher patches the two places they live before the server
starts: the statement hook (bridge/store/_tenancy.py, installed by Store.open) and
``bridge.service.authorize`` wherever it was imported. Everything else is the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge.api._artifacts
import bridge.api._chunk_maps
import bridge.service
import bridge.service._units
import bridge.store._engine
from bridge.service import Grant


def _allow(principal: Any, permission: str, groups: Any = None) -> Grant:
    return Grant(permission, None)


bridge.store._engine.install_tenancy = lambda engine: None  # type: ignore[assignment]
for module in (bridge.service, bridge.service._units, bridge.api._artifacts, bridge.api._chunk_maps):
    module.authorize = _allow  # type: ignore[attr-defined]

if __name__ == "__main__":
    from meshota.cli.server import server_main

    sys.exit(server_main(sys.argv[1:]))
