"""``meshota sim SCENARIO.toml [--seed N] [--out DIR]``: run a scenario, print a summary table,
write metrics.json and PNG plots into DIR."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from meshota.cli._args import CliParser, usage_error

__all__ = ["sim_main"]

PROG = "meshota sim"


def _progress_bar() -> tuple[Callable[[float, float], None], Callable[[], None]]:
    """A rich progress bar on a terminal, else a plain line every ~10 %."""
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        rich_ok = False
    else:
        rich_ok = sys.stderr.isatty()
    if rich_ok:
        prog = Progress(
            TextColumn("simulating"),
            BarColumn(),
            TextColumn("t={task.completed:.1f}s virtual"),
            TimeElapsedColumn(),
            transient=True,
        )
        task = prog.add_task("sim", total=1.0)
        prog.start()

        def update(now: float, bound: float) -> None:
            prog.update(task, completed=now, total=max(bound, now))

        return update, prog.stop
    last = [-1]

    def plain(now: float, bound: float) -> None:
        step = int(10 * min(1.0, now / bound)) if bound > 0 else 10
        if step > last[0]:
            last[0] = step
            print(f"  simulating: virtual t={now:8.1f}s", file=sys.stderr, flush=True)

    return plain, lambda: None


def sim_main(argv: list[str]) -> int:
    ap = CliParser(prog=PROG, description=__doc__)
    ap.add_argument("scenario", type=Path, help="scenario TOML file (see mesh_sim/scenarios/)")
    ap.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    ap.add_argument("--out", type=Path, default=Path("sim-out"), help="directory for metrics.json and PNGs")
    ap.add_argument("--no-plots", action="store_true", help="write metrics.json only")
    args = ap.parse_args(argv)
    from mesh_sim.metrics import write_metrics
    from mesh_sim.report import print_summary, run_succeeded
    from mesh_sim.runner import run_scenario
    from mesh_sim.scenario import ScenarioError, load_scenario
    from mesh_sim.topology import TopologyError

    try:
        sc = load_scenario(args.scenario)
    except ScenarioError as exc:
        return usage_error(PROG, str(exc))
    update, stop = _progress_bar()
    try:
        res = run_scenario(sc, args.seed, progress=update)
    except TopologyError as exc:
        stop()
        return usage_error(PROG, str(exc))
    stop()
    print_summary(res.summary)
    metrics = write_metrics(res.summary, args.out)
    plots: list[Path] = []
    if not args.no_plots:
        from mesh_sim.plots import write_plots

        plots = write_plots(res.summary, res.topology.positions, args.out)
    print(f"\nmetrics   {metrics}")
    for p in plots:
        print(f"plot      {p}")
    print(f"wall      {res.wall_s:.1f} s")
    return 0 if run_succeeded(res.summary, res.radio.alive) else 1
