"""``meshota up`` as a real process in a temp dir (every port 0: free loopback ports), and a real
mender-client 3.4 daemon pointed at it.

``UpProcess`` starts ``python -m meshota up``, waits for ``DATA/run/addresses.json`` and keeps the
output in a file; ``stop()`` sends SIGTERM and returns the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.mender import install_mender_host, require_binary, write_mender_conf

ADMIN_PASSWORD = "up-admin-password-1"
PORTS_ANY = """
[http]
listen = "127.0.0.1:0"
[broker]
listen = "127.0.0.1:0"
[gateway]
udp = "127.0.0.1:0"
dtls = "127.0.0.1:0"
[supervisor]
restart_backoff = 0.2
stop_timeout = 20
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


class UpProcess:
    def __init__(self, tmp: Path, config: str = PORTS_ANY, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.config = tmp / "meshota.toml"
        self.config.write_text(config)
        self.log = tmp / f"up-{time.monotonic_ns()}.log"
        self.env = {**os.environ, "MESHOTA_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, Any] = {}

    def start(self) -> UpProcess:
        (self.data / "run" / "addresses.json").unlink(missing_ok=True)
        with self.log.open("wb") as out:
            argv = ["up", "--config", str(self.config), "--data", str(self.data)]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshota", *argv], stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        path = self.data / "run" / "addresses.json"

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"meshota up exited {self.proc.returncode}:\n{self.output()}")
            return path.exists()

        wait_for("meshota up ready", ready, timeout=90)
        self.addresses = json.loads(path.read_text())
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def child_pid(self, name: str) -> int:
        """The pid of the child running ``meshota <name>`` (or mosquitto); for ``server``, which
        runs inside meshota up's own process (meshota/cli/_up_inprocess.py), that process's pid."""
        assert self.proc is not None
        if name == "server":
            return self.proc.pid
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and (name.encode() in cmd or Path(cmd[0].decode()).name == name):
                return int(entry.name)
        raise AssertionError(f"no child {name} of meshota up")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"meshota up did not stop within {timeout} s:\n{self.output()}") from None


@contextmanager
def running_up(tmp: Path, config: str = PORTS_ANY) -> Iterator[UpProcess]:
    up = UpProcess(tmp, config).start()
    try:
        yield up
    finally:
        up.stop()


@contextmanager
def mender_daemon(tmp: Path, server_url: str, mac: str) -> Iterator[subprocess.Popen[bytes]]:
    """mender-client 3.4 in daemon mode, polling every 2 s, device type ``test-device``."""
    install_mender_host()
    write_mender_conf(tmp, server_url, poll=2, dbus=False)
    data = tmp / "mender-data"
    (tmp / "fallback.conf").write_text("{}")
    with (tmp / "mender.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                require_binary("mender"), "--no-syslog", "-l", "info",
                "-c", str(tmp / "mender.conf"), "-b", str(tmp / "fallback.conf"),
                "-d", str(data), "daemon",
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MESHOTA_TEST_DEVICE_MAC": mac},
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
