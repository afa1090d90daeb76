"""The long-running half of ``meshota up``: carries out a plan (meshota/up/stack.py) with the
supervisor, and serves the HTTP API and the MQTT bridge in the same process.

``meshota up`` checks the configuration and prepares the data directory (TOML, key generation,
mosquitto_passwd, the first start's ``meshota admin`` runs), writes the plan to
``DATA/run/plan.json`` (0600) and replaces itself (``exec``, same pid) with
``python -m meshota.cli.up_runner PLAN``, which reads and deletes the plan and supervises: mosquitto
and the gateway as child processes, the server (the plan's ``in_process`` child) as a thread of
this process (meshota/cli/_up_inprocess.py), so the stack costs what its parts cost.

Signals: SIGINT/SIGTERM stop the stack (gateway, server, mosquitto, each with
``supervisor.stop_timeout``); SIGHUP makes the gateway reload the PSK file and restarts the
server (its MQTT bridge derives sealed-record keys from the same file).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from meshota.up.supervisor import ChildSpec, Supervisor, http_ready, tcp_ready

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~0.5 MB)

if TYPE_CHECKING:
    from typing import Any

__all__ = ["STOP_ORDER", "run_plan"]

STOP_ORDER = ["gateway", "server", "mosquitto"]
_LABELS = {"http": "HTTP API", "broker": "MQTT broker", "udp": "MQTT-SN UDP", "dtls": "MQTT-SN DTLS"}


def _spec(entry: dict[str, Any]) -> ChildSpec:
    ready = entry["ready"]
    spec = ChildSpec(entry["name"], list(entry["argv"]), dict(entry["env"]))
    if entry.get("in_process"):  # ``python -m meshota server ARGS`` run here: ARGS
        args, env = spec.argv[spec.argv.index("server") + 1 :], spec.env
        spec.start = lambda: _in_process(args, env)
    if "line" in ready:
        spec.ready_line = ready["line"]
    elif "tcp" in ready:
        host, port = ready["tcp"]
        spec.ready = lambda: tcp_ready(host, port)
    elif "http" in ready:
        host, port = ready["http"]
        spec.ready = lambda: http_ready(host, port)
    return spec


def _in_process(args: list[str], env: dict[str, str]) -> Any:
    from meshota.cli._up_inprocess import InProcessServer

    return InProcessServer(args, env)


def _write_addresses(data: Path, addresses: dict[str, Any]) -> Path:
    path = data / "run" / "addresses.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**addresses, "pid": os.getpid()}, indent=2) + "\n")
    tmp.replace(path)
    return path


def run_plan(plan: dict[str, Any]) -> int:
    """Start everything, print the addresses, supervise until SIGINT/SIGTERM; 0 on a clean stop,
    1 when the stack could not start."""
    settings = plan["supervisor"]
    sup = Supervisor(
        backoff=settings["restart_backoff"],
        backoff_max=settings["restart_backoff_max"],
        stop_timeout=settings["stop_timeout"],
    )
    flags = {"stop": False, "hup": False}

    def on_stop(_sig: int, _frame: object) -> None:
        flags["stop"] = True

    def on_hup(_sig: int, _frame: object) -> None:
        flags["hup"] = True

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    sup.watch_fd(wake_r)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    data = Path(plan["data"])
    specs = [_spec(entry) for entry in plan["children"]]
    deadline = time.monotonic() + settings["ready_timeout"]
    try:
        for group in (
            [s for s in specs if s.name == "mosquitto"],
            # child processes first: they start while this process sets up the in-process server
            sorted((s for s in specs if s.name != "mosquitto"), key=lambda s: s.start is not None),
        ):
            if group:
                started = [sup.start(spec) for spec in group]
                _wait_or_stop(sup, started, deadline, flags)
    except _Interrupted:
        sup.stop_all(STOP_ORDER)
        return 0
    except RuntimeError as exc:
        sup.say(f"error: {exc}; stopping")
        sup.stop_all(STOP_ORDER)
        return 1
    path = _write_addresses(data, plan["addresses"])
    took = time.time() - plan["began"]
    sup.say(f"ready in {took:.1f} s" + (" (first start included)" if plan["first_start"] else ""))
    for key, label in _LABELS.items():
        if plan["addresses"].get(key):
            sup.say(f"  {label:<13} {plan['addresses'][key]}")
    sup.say(f"  addresses in {path}")
    while not flags["stop"]:
        if flags["hup"]:
            flags["hup"] = False
            sup.say("SIGHUP: the gateway reloads the PSK file; the server restarts to read it too")
            sup.signal_child("gateway", signal.SIGHUP)
            sup.restart("server")
        sup.tend()
        sup.pump(0.25)
    sup.say("stopping: gateway, server, mosquitto")
    sup.stop_all(STOP_ORDER)
    path.unlink(missing_ok=True)
    return 0


class _Interrupted(Exception):
    pass


def _wait_or_stop(sup: Supervisor, children: list[Any], deadline: float, flags: dict[str, bool]) -> None:
    # wait_ready in short slices, so SIGTERM during a slow start is honoured
    while True:
        if flags["stop"]:
            raise _Interrupted
        try:
            sup.wait_ready(children, min(deadline, time.monotonic() + 0.2))
            return
        except RuntimeError as exc:
            if "not ready in time" not in str(exc) or time.monotonic() > deadline:
                raise


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    plan = json.loads(path.read_text())
    path.unlink(missing_ok=True)  # it holds a password: kept in memory only from here on
    return run_plan(plan)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
