"""``meshota up``: mosquitto, the HTTP API + MQTT bridge and the MQTT-SN gateway, supervised.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM) or ``--print-config``; 1 when the stack could
not start; 2 for a bad option or configuration value (one line naming it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from meshota.cli._args import CliParser, ConfigError, parse_broker_url, usage_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from meshota.up.config import UpConfig

__all__ = ["up_main"]

PROG = "meshota up"


def _telemetry_note(config: UpConfig) -> str:
    """Record the installation's first week (its age survives upgrades), and say once what
    telemetry does."""
    from meshota.telemetry.state import STATE_FILE, load_state

    load_state(config.data / STATE_FILE, time.time())
    level = config.get("telemetry", "level")
    if level == "off":
        return 'telemetry is off ([telemetry] level = "off"): nothing is sent (docs/privacy.md)'
    return (f"telemetry level {level}: one report a week to {config.get('telemetry', 'url')}; "
            f"see it with: meshota telemetry show --data {config.data}")  # fmt: skip


def up_main(argv: Sequence[str]) -> int:
    began = time.time()
    from meshota.up.config import load_config, render_toml

    p = CliParser(prog=PROG, description="run the whole meshota server side, supervised")
    p.add_argument("--config", type=Path, default=None, metavar="FILE", help="TOML configuration")
    p.add_argument("--data", type=Path, default=Path("meshota-data"), metavar="DIR",
                   help="data directory (default ./meshota-data)")  # fmt: skip
    p.add_argument("--broker", default=None, metavar="mqtt://H:P", help="use this broker, run none")
    p.add_argument("--role", choices=("all", "gateway", "bridge"), default=None,
                   help="what this process runs (overrides [node] role; docs/deployment.md)")  # fmt: skip
    p.add_argument("--print-config", action="store_true", help="print the effective configuration, exit")
    args = p.parse_args(list(argv))
    try:
        overrides: dict[str, dict[str, str]] = {}
        if args.broker is not None:
            parse_broker_url(args.broker)
            overrides["broker"] = {"url": args.broker}
        if args.role is not None:
            overrides["node"] = {"role": args.role}
        config = load_config(args.config, args.data, overrides)
    except ConfigError as exc:
        return usage_error(PROG, str(exc))
    if args.print_config:
        sys.stdout.write(render_toml(config))
        return 0
    from meshota.up.datadir import prepare
    from meshota.up.stack import build_plan, pick_addresses, write_plan

    try:
        prepared = prepare(config)
        addresses = pick_addresses(config)
    except ConfigError as exc:
        return usage_error(PROG, str(exc))
    if prepared.first_start:
        print(f"meshota up: first start in {config.data}:", flush=True)
    for note in prepared.notes:
        print(f"meshota up:   {note}", flush=True)
    print(f"meshota up: {_telemetry_note(config)}", flush=True)
    plan = build_plan(config, prepared, addresses, began)
    path = config.data / "run" / "plan.json"
    write_plan(plan, path)
    sys.stdout.flush()
    # the same pid goes on as a process that loads only the supervisor (meshota/cli/up_runner.py)
    os.execv(sys.executable, [sys.executable, "-m", "meshota.cli.up_runner", str(path)])


if __name__ == "__main__":
    sys.exit(up_main(sys.argv[1:]))
