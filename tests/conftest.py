"""Shared fixtures: a real mosquitto on a free loopback port, started and stopped per test."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshota.broker import BrokerStartError, MosquittoProcess, start_mosquitto

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


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    m = start_test_mosquitto(tmp_path / "mosquitto")
    try:
        yield m
    finally:
        m.stop()
