"""``meshota demo``: a whole signed mesh OTA on embedded defaults (the run itself: meshota/demo.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from meshota import demo
from meshota.cli._args import CliParser, usage_error

__all__ = ["demo_main"]

PROG = "meshota demo"
DESCRIPTION = (
    "A whole signed mesh OTA on embedded defaults: the Mender handlers in-process and a simulated "
    "mesh (every node checks every chunk and installs), with the baselines on the same topology. "
    "--live: the loopback run instead (mosquitto, the MQTT-SN gateway over UDP, a relay, N nodes)."
)


def demo_main(argv: list[str]) -> int:
    ap = CliParser(prog=PROG, description=DESCRIPTION)
    ap.add_argument("--nodes", type=int, default=20, help="mesh nodes besides the root (default 20)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="directory for metrics.json and PNGs")
    ap.add_argument("--live", action="store_true", help="the loopback run with mosquitto instead")
    ap.add_argument("--mode", choices=("transparent", "aggregating"), default="transparent")
    args = ap.parse_args(argv)
    if not 1 <= args.nodes <= 500:
        return usage_error(PROG, f"--nodes {args.nodes} is not in 1..500")
    if not args.live:
        return demo.run_simulated(args.nodes, args.seed, args.out)
    from meshota.broker import BrokerStartError

    try:
        return asyncio.run(demo.run_live(args.nodes, args.mode))
    except BrokerStartError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
