"""The children of ``meshota up``: a private mosquitto, ``meshota server``, ``meshota gateway``,
written down as a plan that :mod:`meshota.cli.up_runner` carries out.

Each is the existing command, started with files and environment variables for its secrets
(never a secret in argv). The server is marked ``in_process``: the supervising process runs it
itself (meshota/cli/_up_inprocess.py), so ``up`` costs what the parts cost.
Start order: mosquitto (ready: TCP connect), then the server (ready: ``GET /readyz`` 200) and
the gateway (ready: its "meshota gateway: ..." line); stop order: gateway, server, mosquitto.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshota.addresses import format_address, parse_broker_url, parse_hostport
from meshota.up.config import UpConfig
from meshota.up.datadir import Prepared

__all__ = ["Addresses", "build_plan", "pick_addresses", "write_plan"]

STOP_ORDER = ["gateway", "server", "mosquitto"]
BRIDGE_PASSWORD_ENV = "MESHOTA_BROKER_PASSWORD"


@dataclass(frozen=True, slots=True)
class Addresses:
    http: tuple[str, int]
    broker: tuple[str, int]
    udp: tuple[str, int] | None
    dtls: tuple[str, int] | None


def _free_port(host: str, kind: int) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listen(value: str, what: str, kind: int) -> tuple[str, int]:
    host, port = parse_hostport(value, what)
    return host, port or _free_port(host, kind)


def pick_addresses(config: UpConfig) -> Addresses:
    """The configured addresses with every port 0 replaced by a free port."""
    udp, dtls = config.get("gateway", "udp"), config.get("gateway", "dtls")
    if config.get("broker", "url"):
        broker = parse_broker_url(config.get("broker", "url"), "broker.url")
    else:
        broker = _listen(config.get("broker", "listen"), "broker.listen", socket.SOCK_STREAM)
    return Addresses(
        http=_listen(config.get("http", "listen"), "http.listen", socket.SOCK_STREAM),
        broker=broker,
        udp=_listen(udp, "gateway.udp", socket.SOCK_DGRAM) if udp else None,
        dtls=_listen(dtls, "gateway.dtls", socket.SOCK_DGRAM) if dtls else None,
    )


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _meshota(*args: str) -> list[str]:
    return [sys.executable, "-m", "meshota", *args]


def _mosquitto(config: UpConfig, addr: Addresses) -> dict[str, Any]:
    broker = config.data / "broker"
    host, port = addr.broker
    conf = broker / "mosquitto.conf"
    conf.write_text(
        "# written by meshota up at every start\n"
        f"listener {port} {host}\n"
        # as root mosquitto would switch to user "mosquitto", who cannot read our 0600 files
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        "persistence true\n"
        f"persistence_location {broker / 'db'}/\n"
        "autosave_interval 60\n"
        "log_dest stdout\nlog_type error\nlog_type warning\n"
        "max_queued_messages 100000\nmax_inflight_messages 20\n"
        + (broker / "meshota.conf").read_text()  # ACL, passwords, no anonymous clients
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return {"name": "mosquitto", "argv": [exe, "-c", str(conf)], "env": {},
            "ready": {"tcp": [_connect_host(host), port]}}  # fmt: skip


def node_name(config: UpConfig) -> str:
    """The suffix of this node's MQTT client ids: empty for role all (one of each), else
    ``node.name`` or the host name (client ids must differ between the hosts of one broker)."""
    if config.get("node", "role") == "all":
        return str(config.get("node", "name"))
    return str(config.get("node", "name") or socket.gethostname().split(".")[0][:40])


def _client_id(base: str, config: UpConfig) -> str:
    name = node_name(config)
    return f"{base}-{name}" if name else base


def _server(config: UpConfig, addr: Addresses, prepared: Prepared) -> dict[str, Any]:
    host, port = addr.http
    broker_url = "mqtt://" + format_address(_connect_host(addr.broker[0]), addr.broker[1])
    argv = _meshota(
        "server",
        "--http", format_address(host, port),
        "--db", config.get("database", "url"),
        "--artifacts", config.get("artifacts", "dir"),
        "--broker", broker_url,
        "--bridge-client-id", _client_id("meshota-bridge", config),
        "--log-level", config.get("log", "level"),
    )  # fmt: skip
    if config.get("node", "role") == "bridge" and config.get("node", "share_group"):
        argv += ["--share-group", config.get("node", "share_group")]
    env: dict[str, str] = {}
    if prepared.bridge_password is not None:
        argv += ["--broker-username", config.get("broker", "bridge_user")]
        argv += ["--broker-password-env", BRIDGE_PASSWORD_ENV]
        env[BRIDGE_PASSWORD_ENV] = prepared.bridge_password
    if config.get("database", "schema"):
        argv += ["--db-schema", config.get("database", "schema")]
    if config.get("gateway", "dtls"):
        argv += ["--psk-file", config.get("gateway", "psk_file")]
    if config.get("http", "public_url"):
        argv += ["--public-url", config.get("http", "public_url")]
    if config.get("http", "tls_cert"):
        argv += ["--tls-cert", config.get("http", "tls_cert"), "--tls-key", config.get("http", "tls_key")]
    for key in config.get("http", "verify_keys"):
        argv += ["--verify-key", key]
    if config.get("telemetry", "level") != "off":  # the sender is a task in the server
        argv += ["--telemetry-level", config.get("telemetry", "level")]
        argv += ["--telemetry-url", config.get("telemetry", "url")]
        argv += ["--telemetry-state", str(config.data / "telemetry.json")]
    if config.get("public_stats", "enabled"):
        argv.append("--public-stats")
    return {"name": "server", "argv": argv, "env": env, "ready": {"http": [_connect_host(host), port]},
            "in_process": True}  # fmt: skip


def _gateway(config: UpConfig, addr: Addresses, prepared: Prepared) -> dict[str, Any]:
    broker_url = "mqtt://" + format_address(_connect_host(addr.broker[0]), addr.broker[1])
    argv = _meshota("gateway", "--broker", broker_url, "--mode", config.get("gateway", "mode"))
    if node_name(config):
        argv += ["--client-id", _client_id("meshota-gateway", config)]
    if config.get("node", "metrics"):
        argv += ["--metrics", config.get("node", "metrics")]
    if addr.udp is not None:
        argv += ["--udp", format_address(*addr.udp)]
    if addr.dtls is not None:
        argv += ["--dtls", format_address(*addr.dtls), "--psk-file", config.get("gateway", "psk_file")]
        argv += ["--max-dtls-sessions", str(config.get("gateway", "max_dtls_sessions"))]
        argv += ["--dtls-idle-timeout", str(config.get("gateway", "dtls_idle_timeout"))]
    if prepared.gateway_password_file is not None:
        argv += ["--broker-username", config.get("broker", "gateway_user")]
        argv += ["--broker-password-file", str(prepared.gateway_password_file)]
    if prepared.tenant_credentials_file is not None:  # organisations' broker users (docs/topics.md)
        argv += ["--tenant-credentials", str(prepared.tenant_credentials_file)]
    if config.get("log", "level") != "warning":
        argv.append("-v" if config.get("log", "level") == "info" else "-vv")
    return {"name": "gateway", "argv": argv, "env": {}, "ready": {"line": "meshota gateway: "}}


def build_plan(config: UpConfig, prepared: Prepared, addr: Addresses, began: float) -> dict[str, Any]:
    """Everything the runner needs: children, addresses to publish, supervisor settings."""
    role = config.get("node", "role")
    children = [] if config.get("broker", "url") else [_mosquitto(config, addr)]
    if role in ("all", "bridge"):
        children.append(_server(config, addr, prepared))
    if role in ("all", "gateway"):
        children.append(_gateway(config, addr, prepared))
    scheme = "https" if config.get("http", "tls_cert") else "http"
    serves_http = role in ("all", "bridge")
    addresses: dict[str, Any] = {
        "role": role,
        "http": f"{scheme}://{format_address(*addr.http)}" if serves_http else None,
        "broker": f"mqtt://{format_address(*addr.broker)}",
        "udp": format_address(*addr.udp) if addr.udp and role != "bridge" else None,
        "dtls": format_address(*addr.dtls) if addr.dtls and role != "bridge" else None,
        "admin_user": config.get("admin", "username"),
        "psk_file": config.get("gateway", "psk_file") if addr.dtls and role != "bridge" else None,
    }
    sup = config.values["supervisor"]
    return {
        "data": str(config.data),
        "began": began,
        "first_start": prepared.first_start,
        "children": children,
        "addresses": addresses,
        "supervisor": {
            k: sup[k] for k in ("restart_backoff", "restart_backoff_max", "stop_timeout", "ready_timeout")
        },
    }


def write_plan(plan: dict[str, Any], path: Path) -> None:
    """0600: the plan holds the bridge's broker password (passed on to the server's environment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(plan, fh)
