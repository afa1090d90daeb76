"""A real mosquitto for tests: free loopback ports and a broker started in a temporary directory.

The per-test broker is the ``mosquitto`` fixture (tests/conftest.py); tests that need a broker
of their own lifetime (module-scoped worlds, extra configuration) call :func:`start_test_mosquitto`.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from meshota.broker import BrokerStartError, MosquittoProcess, start_mosquitto

__all__ = ["Mosquitto", "free_port", "start_test_mosquitto"]

Mosquitto = MosquittoProcess


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_test_mosquitto(tmp: Path, extra_conf: str = "") -> MosquittoProcess:
    try:
        return start_mosquitto(tmp, extra_conf=extra_conf)
    except BrokerStartError as exc:
        pytest.fail(f"{exc} (.ci/run and scripts/setup.sh install it)")
