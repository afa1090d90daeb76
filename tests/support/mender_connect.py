"""The real mender-client 3.4 and mender-connect 2.1 on a private D-Bus system bus (plain helpers).

mender-connect gets the device's JWT and the server URL from mender-client over D-Bus
(``io.mender.Authentication1.GetJwtToken`` on the *system* bus, object
``/io/mender/AuthenticationManager``); mender-client serves it when its config has
``"DBus": {"Enabled": true}``. Tests start their own ``dbus-daemon`` with a permissive system-bus
config on a socket in the test's directory and point both daemons at it with
``DBUS_SYSTEM_BUS_ADDRESS``; nothing touches the machine's own bus.

Needs root (mender-client's identity script lives at a fixed path: see
tests/bridge/http/test_mender_client.py) and the Debian packages ``mender-client``,
``mender-connect`` and ``dbus-daemon``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.mender import install_mender_host, require_binary, write_mender_conf

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@dataclass
class DeviceHost:
    """A device's host: its private system bus, mender-client, and (once started) mender-connect."""

    tmp: Path
    bus_address: str
    mac: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address,
            "MESHOTA_TEST_DEVICE_MAC": self.mac,
        }

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with log.open("ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def start_connect(self, config: dict[str, Any]) -> subprocess.Popen[bytes]:
        """mender-connect with ``config`` (its mender-connect.conf: the device-side setting)."""
        conf = self.tmp / "mender-connect.conf"
        conf.write_text(json.dumps(config))
        fallback = self.tmp / "mender-connect-fallback.conf"
        fallback.write_text("{}")
        argv = [require_binary("mender-connect"), "--debug", "-c", str(conf), "-b", str(fallback), "daemon"]
        return self.spawn("mender-connect", argv)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def start_device_host(tmp: Path, server_url: str, mac: str) -> DeviceHost:
    """A private system bus and mender-client (DBus enabled) enrolling at ``server_url``."""
    require_binary("mender")
    install_mender_host()
    tmp.mkdir(parents=True, exist_ok=True)
    socket = tmp / "system_bus.sock"
    (tmp / "bus.conf").write_text(BUS_CONFIG.format(socket=socket))
    host = DeviceHost(tmp, f"unix:path={socket}", mac)
    host.spawn(
        "dbus-daemon", [require_binary("dbus-daemon"), "--config-file", str(tmp / "bus.conf"), "--nofork"]
    )
    deadline = time.monotonic() + 10
    while not socket.exists():
        if time.monotonic() > deadline:
            host.close()
            pytest.fail(f"dbus-daemon did not start: {host.log('dbus-daemon')}")
        time.sleep(0.05)
    write_mender_conf(tmp, server_url, poll=5, dbus=True)
    data = tmp / "mender-data"
    (tmp / "mender-fallback.conf").write_text("{}")
    argv = [
        require_binary("mender"), "--no-syslog", "-l", "info", "-c", str(tmp / "mender.conf"),
        "-b", str(tmp / "mender-fallback.conf"), "-d", str(data), "daemon",
    ]  # fmt: skip
    host.spawn("mender", argv)
    return host
