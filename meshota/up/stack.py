"""The children of ``meshota up``: a private mosquitto, ``meshota server``, ``meshota gateway``.

Each is the existing command, started with files and environment variables for its secrets
(never a secret in argv), so ``up`` costs what the parts cost plus one small supervisor.
Start order: mosquitto (ready: TCP connect), then the server (ready: ``GET /readyz`` 200) and
the gateway (ready: its "meshota gateway: ..." line); stop order: gateway, server, mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass

from meshota.cli._args import format_address, parse_broker_url, parse_hostport
from meshota.up.config import UpConfig
from meshota.up.datadir import Prepared
from meshota.up.supervisor import Child, ChildSpec, Supervisor, http_ready, tcp_ready

__all__ = ["Addresses", "pick_addresses", "run_stack"]

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


def _mosquitto(config: UpConfig, addr: Addresses) -> ChildSpec:
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
    probe_host = _connect_host(host)

    async def ready(_: Child) -> bool:
        return await tcp_ready(probe_host, port)

    return ChildSpec("mosquitto", [exe, "-c", str(conf)], ready=ready)


def _server(config: UpConfig, addr: Addresses, prepared: Prepared) -> ChildSpec:
    host, port = addr.http
    broker_url = "mqtt://" + format_address(_connect_host(addr.broker[0]), addr.broker[1])
    argv = _meshota(
        "server",
        "--http", format_address(host, port),
        "--db", config.get("database", "url"),
        "--artifacts", config.get("artifacts", "dir"),
        "--broker", broker_url,
        "--bridge-client-id", "meshota-bridge",
        "--log-level", config.get("log", "level"),
    )  # fmt: skip
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
    probe_host = _connect_host(host)

    async def ready(_: Child) -> bool:
        return await http_ready(probe_host, port)

    return ChildSpec("server", argv, env=env, ready=ready)


def _gateway(config: UpConfig, addr: Addresses, prepared: Prepared) -> ChildSpec:
    broker_url = "mqtt://" + format_address(_connect_host(addr.broker[0]), addr.broker[1])
    argv = _meshota("gateway", "--broker", broker_url, "--mode", config.get("gateway", "mode"))
    if addr.udp is not None:
        argv += ["--udp", format_address(*addr.udp)]
    if addr.dtls is not None:
        argv += ["--dtls", format_address(*addr.dtls), "--psk-file", config.get("gateway", "psk_file")]
        argv += ["--max-dtls-sessions", str(config.get("gateway", "max_dtls_sessions"))]
        argv += ["--dtls-idle-timeout", str(config.get("gateway", "dtls_idle_timeout"))]
    if prepared.gateway_password_file is not None:
        argv += ["--broker-username", config.get("broker", "gateway_user")]
        argv += ["--broker-password-file", str(prepared.gateway_password_file)]
    if config.get("log", "level") != "warning":
        argv.append("-v" if config.get("log", "level") == "info" else "-vv")
    return ChildSpec("gateway", argv, ready_line="meshota gateway: ")


def _write_addresses(config: UpConfig, addr: Addresses) -> dict[str, object]:
    scheme = "https" if config.get("http", "tls_cert") else "http"
    out: dict[str, object] = {
        "http": f"{scheme}://{format_address(*addr.http)}",
        "broker": f"mqtt://{format_address(*addr.broker)}",
        "udp": format_address(*addr.udp) if addr.udp else None,
        "dtls": format_address(*addr.dtls) if addr.dtls else None,
        "admin_user": config.get("admin", "username"),
        "psk_file": config.get("gateway", "psk_file") if addr.dtls else None,
        "pid": os.getpid(),
    }
    path = config.data / "run" / "addresses.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    return out


async def run_stack(config: UpConfig, prepared: Prepared, addr: Addresses, began: float) -> int:
    """Start everything, print the addresses, supervise until SIGINT/SIGTERM; 0 on a clean stop."""
    sup = Supervisor(
        backoff=config.get("supervisor", "restart_backoff"),
        backoff_max=config.get("supervisor", "restart_backoff_max"),
        stop_timeout=config.get("supervisor", "stop_timeout"),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    restarts: set[asyncio.Task[None]] = set()

    def hangup() -> None:
        sup.say("SIGHUP: the gateway reloads the PSK file; the server restarts to read it too")
        sup.signal_child("gateway", signal.SIGHUP)
        restarts.add(task := loop.create_task(sup.restart("server")))
        task.add_done_callback(restarts.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    deadline = began + config.get("supervisor", "ready_timeout")
    specs = []
    if not config.get("broker", "url"):
        specs.append(_mosquitto(config, addr))
    specs += [_server(config, addr, prepared), _gateway(config, addr, prepared)]
    starting = asyncio.create_task(_start_all(sup, specs, deadline))
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if starting not in done:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await sup.stop_all(STOP_ORDER)
        return 0
    waiter.cancel()
    error = starting.exception()
    if error is not None:
        sup.say(f"error: {error}; stopping")
        await sup.stop_all(STOP_ORDER)
        return 1
    out = _write_addresses(config, addr)
    sup.say(
        f"ready in {time.monotonic() - began:.1f} s (first start included)"
        if prepared.first_start
        else f"ready in {time.monotonic() - began:.1f} s"
    )
    for key in ("http", "broker", "udp", "dtls"):
        if out[key]:
            label = {
                "http": "HTTP API",
                "broker": "MQTT broker",
                "udp": "MQTT-SN UDP",
                "dtls": "MQTT-SN DTLS",
            }
            sup.say(f"  {label[key]:<13} {out[key]}")
    sup.say(f"  addresses in {config.data / 'run' / 'addresses.json'}")
    await stop.wait()
    sup.say("stopping: gateway, server, mosquitto")
    await sup.stop_all(STOP_ORDER)
    (config.data / "run" / "addresses.json").unlink(missing_ok=True)
    return 0


async def _start_all(sup: Supervisor, specs: list[ChildSpec], deadline: float) -> None:
    first = specs[0]
    if first.name == "mosquitto":
        await sup.start(first, deadline)
        specs = specs[1:]
    await asyncio.gather(*(sup.start(spec, deadline) for spec in specs))
