"""``meshota collector``: the telemetry collector (meshota/telemetry/collector.py) over HTTP.

It keeps weekly totals only (a SQLite file), never a report or an address; no access log.
Exit codes: 0 after a clean stop, 2 for a bad option (one line naming it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from meshota.cli._args import CliParser, ConfigError, parse_hostport, usage_error

__all__ = ["collector_main"]

PROG = "meshota collector"


def collector_main(argv: Sequence[str]) -> int:
    p = CliParser(prog=PROG, description="receive installation reports, publish weekly totals (k >= 5)")
    p.add_argument("--listen", default="127.0.0.1:8090", metavar="H:P")
    p.add_argument("--db", type=Path, required=True, metavar="FILE", help="SQLite file of the weekly totals")
    args = p.parse_args(list(argv))
    try:
        host, port = parse_hostport(args.listen, "--listen")
    except ConfigError as exc:
        return usage_error(PROG, str(exc))
    import sqlite3

    import uvicorn

    from meshota.telemetry.collector import CollectorCore, asgi_app

    try:
        core = CollectorCore(args.db)
    except sqlite3.Error as exc:
        return usage_error(PROG, f"bad --db value {str(args.db)!r}: {exc}")
    config = uvicorn.Config(
        asgi_app(core, time.time), host=host, port=port, lifespan="off", access_log=False,
        proxy_headers=False, server_header=False, date_header=False, log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    print(f"meshota collector: listening on {host}:{port}, totals in {args.db}", flush=True)
    server.run()
    core.close()
    return 0


if __name__ == "__main__":
    sys.exit(collector_main(sys.argv[1:]))
