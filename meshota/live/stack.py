"""The server side of the live demo, behind one small interface (:class:`StackAddresses`).

What the demo needs from the server side is only: the HTTP base URL of the management API, the
gateway's DTLS address (the relay forwards there), the admin credentials, and the PSK file the
gateway and the bridge read (written before the stack starts). :func:`server_side` provides them.

It is ``meshota up --data DIR`` as a child process (log ``DIR/logs/up.log``): the demo writes
``DIR/keys/psk.txt`` (every device's PSK; the gateway and the bridge read it) and a config with every
port 0 and the vendor key, starts ``up`` with ``MESHOTA_ADMIN_PASSWORD`` in its environment, waits
for ``DIR/run/addresses.json`` and reads it with :func:`read_addresses`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshota.live.children import ChildError, start_child

__all__ = [
    "StackAddresses",
    "read_addresses",
    "server_side",
    "write_psk_file",
]


@dataclass(frozen=True)
class StackAddresses:
    http: str  # base URL of the HTTP API, e.g. http://127.0.0.1:8080
    broker: str  # mqtt://H:P
    dtls: str  # the gateway's DTLS listener, HOST:PORT (direct and relayed; the relay parses it)
    admin_user: str
    admin_password: str
    psk_file: Path
    description: str = ""  # one line for the demo's summary: what runs where


def write_psk_file(path: Path, psks: Mapping[str, bytes]) -> None:
    """``identity,hexkey`` lines (``meshota gateway --psk-file`` format), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{identity},{key.hex()}\n" for identity, key in psks.items())


def read_addresses(path: Path, admin_password: str) -> StackAddresses:
    """``meshota up``'s ``DIR/run/addresses.json`` (keys http, broker, dtls, admin_user, psk_file)."""
    doc = json.loads(path.read_text())
    http = str(doc["http"])
    if not http.startswith(("http://", "https://")):
        http = f"http://{http}"
    return StackAddresses(
        http=http,
        broker=str(doc["broker"]),
        dtls=str(doc["dtls"]).removeprefix("udp://"),
        admin_user=str(doc["admin_user"]),
        admin_password=admin_password,
        psk_file=Path(doc["psk_file"]),
        description=f"meshota up ({path})",
    )


_CONFIG = """# meshota demo --live: every port on loopback, any free one
[http]
listen = "127.0.0.1:0"
verify_keys = [{verify_key}]
[broker]
listen = "127.0.0.1:0"
[gateway]
udp = "127.0.0.1:0"
dtls = "127.0.0.1:0"
[log]
level = "warning"
"""


@contextmanager
def server_side(data: Path, psks: Mapping[str, bytes], verify_key: Path) -> Iterator[StackAddresses]:
    """The whole server side on loopback — ``meshota up --data DATA`` as a child process — with
    ``psks`` provisioned before it starts; stopped (SIGTERM, in ``up``'s order) on exit."""
    data.mkdir(parents=True, exist_ok=True)
    write_psk_file(data / "keys" / "psk.txt", psks)
    config = data / "meshota.toml"
    config.write_text(_CONFIG.format(verify_key=json.dumps(str(verify_key))))
    addresses = data / "run" / "addresses.json"
    addresses.unlink(missing_ok=True)
    admin_password = secrets.token_urlsafe(18)
    up = start_child(
        "meshota up",
        ["up", "--config", str(config), "--data", str(data)],
        data / "logs" / "up.log",
        {"MESHOTA_ADMIN_PASSWORD": admin_password},
    )
    try:
        deadline = time.monotonic() + 60
        while not addresses.exists():
            up.check_alive()
            if time.monotonic() > deadline:
                raise ChildError(f"meshota up not ready within 60 s (log {up.log})")
            time.sleep(0.05)
        stack = read_addresses(addresses, admin_password)
        yield StackAddresses(
            http=stack.http,
            broker=stack.broker,
            dtls=stack.dtls,
            admin_user=stack.admin_user,
            admin_password=admin_password,
            psk_file=stack.psk_file,
            description=(
                f"meshota up: mosquitto {stack.broker} (ACL, passwords), gateway dtls {stack.dtls}, "
                f"HTTP API + MQTT bridge {stack.http}, SQLite in {data}"
            ),
        )
        up.check_alive()  # up restarts a child that dies; up itself dying is an error, not silence
    finally:
        status = up.stop(grace=30.0)
        if status not in (0, None):
            raise ChildError(f"meshota up stopped with {status}: {up.log_tail()}")
