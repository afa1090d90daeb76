"""The data directory of ``meshota up``: what the first start creates, and where.

::

    DATA/
      meshota.db            SQLite store (unless database.url names PostgreSQL); holds the
                            chunk-map signing key (settings table) and the admin user
      artifacts/            uploaded artifacts
      keys/                 0700
        psk.txt             DTLS PSK file ('identity,hexkey'), first start: one device, node-1
        deployment-key.pub.pem   public half of the chunk-map signing key (for node provisioning)
      broker/               private mosquitto: acl, passwd, credentials (0600), mosquitto.conf,
        gateway.password    0600, read by the gateway child (--broker-password-file)
        db/                 mosquitto persistence (persistent sessions survive a restart)
      run/addresses.json    written when the stack is ready (http, broker, udp, dtls, ...)
      .initialized          written once the first start completed

Secrets never go on a command line: the gateway reads its broker password from a file, the
server its broker password from the environment, ``meshota admin create-user`` the admin
password from the environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from meshota.addresses import ConfigError
from meshota.broker_config import BrokerConfigError, BrokerUsers, write_broker_config
from meshota.up.config import UpConfig

__all__ = ["ADMIN_PASSWORD_ENV", "Prepared", "admin_env", "prepare"]

ADMIN_PASSWORD_ENV = "MESHOTA_ADMIN_PASSWORD"
FIRST_DEVICE = "node-1"


@dataclass
class Prepared:
    """What the children need, and what the first start has to tell the operator."""

    gateway_password_file: Path | None
    bridge_password: str | None
    first_start: bool
    notes: list[str] = field(default_factory=list)
    tenant_credentials_file: Path | None = None  # the gateway's --tenant-credentials


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _read_secret_file(path: str, key: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key} {path!r}: {exc.strerror}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"{key} {path!r}: empty")
    return text


def _private_broker(data: Path, users: BrokerUsers, tenants: list[str]) -> tuple[Path, str]:
    broker = data / "broker"
    creds = broker / "credentials"
    known: dict[str, str] = {}
    if creds.exists():
        for line in creds.read_text().splitlines():
            user, sep, password = line.partition(":")
            if sep:
                known[user] = password
    passwords = {u: known[u] for u in (users.gateway, users.bridge, *tenants) if u in known}
    try:
        chosen = write_broker_config(broker, users, passwords, tenants=tenants)
    except BrokerConfigError as exc:
        raise ConfigError(f"broker: {exc}") from None
    (broker / "db").mkdir(exist_ok=True)
    gateway_file = broker / "gateway.password"
    _write_secret(gateway_file, chosen[users.gateway] + "\n")
    return gateway_file, chosen[users.bridge]


def _psk_file(path: Path, notes: list[str]) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_secret(
        path,
        "# DTLS PSK file of meshota up: one device per line, identity,hexkey ('#' comments).\n"
        "# Add a line per node, then send SIGHUP to meshota up: the gateway reloads it.\n"
        f"{FIRST_DEVICE},{secrets.token_hex(16)}\n",
    )
    notes.append(f"PSK file (DTLS node keys, one device {FIRST_DEVICE} to start with): {path}")


def admin_env(config: UpConfig) -> tuple[dict[str, str], str | None]:
    """(environment for ``meshota admin create-user --password-env``, generated password or None)."""
    file = config.get("admin", "password_file")
    if file:
        return {ADMIN_PASSWORD_ENV: _read_secret_file(file, "admin.password_file")}, None
    given = os.environ.get(ADMIN_PASSWORD_ENV)
    if given:
        return {ADMIN_PASSWORD_ENV: given}, None
    generated = secrets.token_urlsafe(18)
    return {ADMIN_PASSWORD_ENV: generated}, generated


def _admin(config: UpConfig, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    db = ["--db", config.get("database", "url")]
    if config.get("database", "schema"):
        db += ["--db-schema", config.get("database", "schema")]
    cmd = [sys.executable, "-m", "meshota", "admin", args[0], *db, *args[1:]]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def _first_start(config: UpConfig, notes: list[str]) -> None:
    data = config.data
    key_file = data / "keys" / "deployment-key.pub.pem"
    done = _admin(config, ["deployment-key", "--out", str(key_file)], {})
    if done.returncode != 0:
        raise ConfigError(f"database {config.get('database', 'url')!r}: {done.stderr.strip()}")
    notes.append(f"chunk-map signing key: in the database; its public key: {key_file}")
    user = config.get("admin", "username")
    env, generated = admin_env(config)
    done = _admin(config, ["create-user", "--username", user, "--password-env", ADMIN_PASSWORD_ENV], env)
    if done.returncode == 0:
        if generated is not None:
            notes.append(f"admin user {user}, password (shown once, not stored): {generated}")
        else:
            notes.append(f"admin user {user} (password from {ADMIN_PASSWORD_ENV} or admin.password_file)")
    elif "exists" in done.stderr:
        notes.append(f"admin user {user} already exists: password unchanged")
    else:
        raise ConfigError(f"admin.username {user!r}: {done.stderr.strip()}")


def prepare(config: UpConfig) -> Prepared:
    """Create the data directory's pieces that are missing; cheap when they exist."""
    data = config.data
    notes: list[str] = []
    try:
        for sub in ("", "run", "broker", "artifacts"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        (data / "keys").mkdir(exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"--data {str(data)!r}: {exc.strerror}") from None
    if config.get("gateway", "dtls"):
        _psk_file(Path(config.get("gateway", "psk_file")), notes)
    users = BrokerUsers(config.get("broker", "gateway_user"), config.get("broker", "bridge_user"))
    gateway_file: Path | None
    bridge_password: str | None
    if config.get("broker", "url"):
        gw = config.get("broker", "gateway_password_file")
        gateway_file = Path(gw) if gw else None
        br = config.get("broker", "bridge_password_file")
        bridge_password = _read_secret_file(br, "broker.bridge_password_file") if br else None
        if gateway_file is not None:
            _read_secret_file(gw, "broker.gateway_password_file")
    else:
        gateway_file, bridge_password = _private_broker(data, users, config.get("broker", "tenants"))
    marker = data / ".initialized"
    first = not marker.exists()
    if first and config.get("node", "role") != "gateway":  # a gateway has no database
        _first_start(config, notes)
        marker.write_text("meshota up: first start completed\n")
    tenant_file: Path | None = None  # organisations' broker passwords, for the gateway
    given = config.get("broker", "tenant_credentials_file")
    if config.get("broker", "url") and given:
        _read_secret_file(given, "broker.tenant_credentials_file")
        tenant_file = Path(given)
    elif not config.get("broker", "url") and config.get("broker", "tenants"):
        tenant_file = data / "broker" / "tenant-credentials"
    return Prepared(gateway_file, bridge_password, first, notes, tenant_file)
