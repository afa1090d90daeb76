"""``meshota telemetry``: see exactly what is (or would be) sent.

``show [--level L]``: the HTTP request an installation sends this week, byte for byte (request
line, headers, body), built from the same configuration, data directory and database as
``meshota up``; nothing is sent and nothing is written. At level ``off`` nothing would be sent:
stdout stays empty and stderr says so.

``node-record --level L``: the inventory record a node sends at that level (firmware_proto).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshota.cli._args import CliParser, ConfigError, usage_error

__all__ = ["telemetry_main"]

PROG = "meshota telemetry"


async def _facts(url: str, schema: str | None) -> dict[str, Any]:
    from bridge.api import installation_facts
    from bridge.store import Store

    store = Store.open(url, schema=schema)
    try:
        await store.migrate()
        return await installation_facts(store)
    finally:
        await store.close()


def show_bytes(config_path: Path | None, data: Path, level: str | None, now: float) -> bytes:
    """The request of this week at ``level`` (default: the configured one); b"" at off."""
    import httpx

    from meshota import __version__
    from meshota.telemetry.report import HEADERS, build_report, encode_body, make_request, request_bytes
    from meshota.telemetry.state import STATE_FILE, load_state
    from meshota.up.config import load_config
    from wire.countme import window_of

    config = load_config(config_path, data)
    level = level or config.get("telemetry", "level")
    if level == "off":
        return b""
    url = config.get("database", "url")
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        facts: dict[str, Any] = {"nodes": 0, "database": "sqlite"}  # not started yet: nothing to count
    else:
        facts = asyncio.run(_facts(url, config.get("database", "schema") or None))
    state = load_state(config.data / STATE_FILE, now, create=False)
    window = window_of(now)
    body = encode_body(build_report(level, window, state.age(window), __version__, facts))
    with httpx.Client(trust_env=False, headers=HEADERS) as client:
        return request_bytes(make_request(client, config.get("telemetry", "url"), body))


def telemetry_main(argv: Sequence[str]) -> int:
    p = CliParser(prog=PROG, description="what meshota's telemetry sends, byte for byte")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CliParser)
    show = sub.add_parser("show", help="print the exact request this installation sends this week")
    show.add_argument("--config", type=Path, default=None, metavar="FILE", help="meshota up's TOML")
    show.add_argument("--data", type=Path, default=Path("meshota-data"), metavar="DIR")
    show.add_argument("--level", choices=("off", "minimal", "full"), default=None)
    node = sub.add_parser("node-record", help="print the inventory record a node sends at a level")
    node.add_argument("--level", choices=("minimal", "full"), default="minimal")
    node.add_argument("--device-type", required=True)
    node.add_argument("--firmware-version", required=True)
    node.add_argument("--hardware", default="")
    node.add_argument("--radio", default="")
    node.add_argument("--neighbours", default="", metavar="ID,...")
    args = p.parse_args(list(argv))
    if args.command == "node-record":
        from firmware_proto.inventory_levels import InventoryError, NodeInventory, record_bytes

        inv = NodeInventory(
            args.device_type, args.firmware_version, args.hardware, args.radio,
            tuple(n for n in args.neighbours.split(",") if n),
        )  # fmt: skip
        try:
            sys.stdout.buffer.write(record_bytes(inv, args.level) + b"\n")
        except InventoryError as exc:
            return usage_error(f"{PROG} node-record", str(exc))
        return 0
    try:
        out = show_bytes(args.config, args.data, args.level, time.time())
    except ConfigError as exc:
        return usage_error(f"{PROG} show", str(exc))
    if not out:
        print(f"{PROG} show: level off: nothing is sent", file=sys.stderr)
        return 0
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(telemetry_main(sys.argv[1:]))
