"""Shared fixtures: a real mosquitto on a free loopback port, started and stopped per test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_mosquitto(tmp: Path, extra_conf: str = "") -> Mosquitto:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto; .ci/run does this)")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    log = tmp / "mosquitto.log"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {log}\nlog_type all\nmax_queued_messages 100000\n{extra_conf}"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"mosquitto exited: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Mosquitto(proc, port, log)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("mosquitto did not start listening within 10 s")


def stop_mosquitto(m: Mosquitto) -> None:
    m.proc.terminate()
    try:
        m.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        m.proc.kill()
        m.proc.wait()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = start_mosquitto(tmp_path)
    try:
        yield m
    finally:
        stop_mosquitto(m)
