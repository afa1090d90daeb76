"""``meshota demo``: a whole signed mesh OTA on embedded defaults (the run itself: meshota/demo.py)."""

from __future__ import annotations

from pathlib import Path

from meshota import demo
from meshota.cli._args import CliParser, usage_error

__all__ = ["demo_main"]

PROG = "meshota demo"
DESCRIPTION = (
    "A whole signed mesh OTA on embedded defaults: the Mender handlers in-process and a simulated "
    "mesh (every node checks every chunk and installs), with the baselines on the same topology. "
    "--live: the same OTA over real sockets on loopback instead: mosquitto, the MQTT-SN gateway "
    "over DTLS and the server as child processes, a relay process, N nodes with file-backed flash "
    "enrolling over DTLS, the group stream over UDP multicast, sealed statuses."
)


def demo_main(argv: list[str]) -> int:
    ap = CliParser(prog=PROG, description=DESCRIPTION)
    ap.add_argument("--nodes", type=int, default=20, help="mesh nodes besides the root (default 20)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for metrics.json and PNGs (--live: the run's files, kept: data, logs, node flash)",
    )
    ap.add_argument("--live", action="store_true", help="a real OTA over real sockets on loopback instead")
    args = ap.parse_args(argv)
    limit = 100 if args.live else 500
    if not 1 <= args.nodes <= limit:
        return usage_error(
            PROG, f"--nodes {args.nodes} is not in 1..{limit}" + (" with --live" if args.live else "")
        )
    if not args.live:
        return demo.run_simulated(args.nodes, args.seed, args.out)
    from meshota.live.run import run_live

    return run_live(args.nodes, args.out)
