"""The server side of the live demo, behind one small interface (:class:`StackAddresses`).

What the demo needs from the server side is only: the HTTP base URL of the management API, the
gateway's DTLS address (the relay forwards there), the admin credentials, and the PSK file the
gateway and the bridge read (written before the stack starts). :func:`server_side` provides them.

Today it starts the pieces from the existing commands, each a child process with its log under
``DIR/logs``: a private mosquitto locked down by ``meshota.broker_config`` (ACL, hashed
passwords; the gateway and the bridge each with their own user), ``meshota gateway`` on DTLS (PSK
file) and ``meshota server --broker`` (HTTP + MQTT bridge, SQLite in ``DIR``, sealed-record keys
derived from the same PSK file, the vendor key for artifact signatures). Once ``meshota up`` is
on main, :func:`server_side` becomes: write ``DIR/keys/psk.txt``, start ``meshota up --data DIR``
with ``MESHOTA_ADMIN_PASSWORD`` in its environment, wait for ``DIR/run/addresses.json`` and
return :func:`read_addresses` of it — the rest of the demo does not change.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from meshota.broker import free_tcp_port, start_mosquitto
from meshota.broker_config import BrokerUsers, write_broker_config
from meshota.live.children import Child, ChildError, start_child

__all__ = [
    "ADMIN_USER",
    "StackAddresses",
    "read_addresses",
    "server_side",
    "write_psk_file",
]

ADMIN_USER = "demo-admin@meshota.local"


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


async def _create_admin(db_url: str, user: str, password: str) -> None:
    from bridge.api import create_user
    from bridge.store import Store

    store = Store.open(db_url)
    try:
        await store.migrate()
        async with store.transaction() as conn:
            await create_user(conn, user, password)
    finally:
        await store.close()


def _wait_http(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        child.check_alive()
        try:
            httpx.get(f"{url}/api/management/v1/useradm/users", timeout=1.0)
            return  # any answer (401 without a token): the bridge started before HTTP serves
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise ChildError(f"{child.name} did not answer HTTP within {timeout:g} s") from None
            time.sleep(0.05)


@contextmanager
def server_side(data: Path, psks: Mapping[str, bytes], verify_key: Path) -> Iterator[StackAddresses]:
    """The whole server side on loopback, with ``psks`` provisioned; stopped on exit."""
    import asyncio

    data.mkdir(parents=True, exist_ok=True)
    psk_file = data / "keys" / "psk.txt"
    write_psk_file(psk_file, psks)
    users = BrokerUsers()
    creds = write_broker_config(data / "broker", users)
    # mosquitto started as root drops to user "mosquitto", which cannot read a 0600 file here
    conf = (data / "broker" / "meshota.conf").read_text() + ("user root\n" if os.geteuid() == 0 else "")
    admin_password = secrets.token_urlsafe(18)
    db_url = f"sqlite:///{data / 'meshota.sqlite'}"
    asyncio.run(_create_admin(db_url, ADMIN_USER, admin_password))
    logs = data / "logs"
    with ExitStack() as stack:
        broker = start_mosquitto(data / "mosquitto", extra_conf=conf)
        stack.callback(broker.stop)
        gateway = start_child(
            "meshota gateway",
            [
                "gateway",
                "--broker",
                broker.url,
                "--dtls",
                "127.0.0.1:0",
                "--psk-file",
                str(psk_file),
                "--broker-username",
                users.gateway,
                "--broker-password-env",
                "MESHOTA_GATEWAY_PASSWORD",
            ],
            logs / "gateway.log",
            {"MESHOTA_GATEWAY_PASSWORD": creds[users.gateway]},
        )
        stack.callback(gateway.stop)
        dtls = gateway.wait_for(r"meshota gateway: dtls (\S+) ", timeout=30).group(1)
        port = free_tcp_port()
        url = f"http://127.0.0.1:{port}"
        server = start_child(
            "meshota server",
            [
                "server",
                "--http",
                f"127.0.0.1:{port}",
                "--db",
                db_url,
                "--artifacts",
                str(data / "artifacts"),
                "--broker",
                broker.url,
                "--broker-username",
                users.bridge,
                "--psk-file",
                str(psk_file),
                "--verify-key",
                str(verify_key),
                "--public-url",
                url,
                "--log-level",
                "warning",
            ],
            logs / "server.log",
            {"MESHOTA_BROKER_PASSWORD": creds[users.bridge]},
        )
        stack.callback(server.stop)
        _wait_http(url, server, timeout=30)
        yield StackAddresses(
            http=url,
            broker=broker.url,
            dtls=dtls,
            admin_user=ADMIN_USER,
            admin_password=admin_password,
            psk_file=psk_file,
            description=(
                f"mosquitto {broker.url} (ACL, passwords), meshota gateway dtls "
                f"{dtls}, meshota server {url} + MQTT bridge, SQLite in {data}"
            ),
        )
        for child in (gateway, server):
            child.check_alive()  # a piece that died during the run is an error, not silence
