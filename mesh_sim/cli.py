"""``meshota sim SCENARIO.toml [--seed N] [--out DIR]``: run a scenario, print a summary table,
write metrics.json and PNG plots into DIR."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["print_summary", "sim_main"]


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


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_summary(s: dict[str, Any]) -> None:
    print(f"scenario  {s['scenario']}  seed {s['seed']}  trace {s['trace_hash']}")
    print(
        f"mesh      {s['nodes']} nodes, {s['topology']}, {s['profile']}, roots {s['roots']}, "
        f"depth {s['max_depth']}, {s['forwarders']} forwarders"
    )
    print(
        f"image     {s['image_bytes']:,} B in {s['chunks']} chunks of {s['chunk_size']} B "
        f"+ {s['map_pages']} signed-map pages; stream started at t={s['stream_start_s']} s"
    )
    print(
        f"outcome   {s['installed']}/{s['nodes']} installed, {s['tampered_installs']} tampered installs, "
        f"{s['rejected_chunks']} chunks and {s['rejected_maps']} map heads rejected, "
        f"{s['fallback_nodes']} fell back, {s['reelections']} re-elections, "
        f"{s['streams']} streams (root + relays), {s['root_fetches']} root fetches"
    )
    rows = [("group stream", s["group_stream"])]
    for key in ("mupgrade", "unicast"):
        if key in s:
            rows.append((key, s[key]))
    print()
    print(f"{'method':<14} {'bytes on air':>15} {'frames':>11} {'completion s':>13} {'energy J':>10}")
    for name, r in rows:
        print(
            f"{name:<14} {_fmt(r['bytes_on_air']):>15} {_fmt(r['frames']):>11} "
            f"{_fmt(r['completion_s']):>13} {_fmt(r['energy_mj'] / 1000):>10}"
        )
    lb = s["lower_bound"]
    print(
        f"{'lower bound':<14} {_fmt(int(lb['payload_bytes'])):>15} {_fmt(int(lb['frames'])):>11} "
        f"{_fmt(lb['completion_s']):>13} {'':>10}   (image bytes × forwarders)"
    )
    other = {k: v for k, v in s["bytes_by_kind"].items() if k in ("status", "control")}
    print(f"not compared (every method pays them): {other} bytes on air")
    if "ratios" in s:
        r = s["ratios"]
        print(
            f"\ngroup stream: {r['unicast_over_group']}× fewer bytes than unicast, "
            f"{r['mupgrade_over_group']}× fewer than Mupgrade-style, "
            f"{r['group_over_lower_bound_payload']}× the lower bound "
            f"({r['group_over_lower_bound_frames']}× in whole frames on air)"
        )


def sim_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="meshota sim", description=__doc__)
    ap.add_argument("scenario", type=Path, help="scenario TOML file (see mesh_sim/scenarios/)")
    ap.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    ap.add_argument("--out", type=Path, default=Path("sim-out"), help="directory for metrics.json and PNGs")
    ap.add_argument("--no-plots", action="store_true", help="write metrics.json only")
    args = ap.parse_args(argv)
    from .metrics import write_metrics
    from .runner import run_scenario
    from .scenario import ScenarioError, load_scenario
    from .topology import TopologyError

    try:
        sc = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"meshota sim: {exc}", file=sys.stderr)
        return 2
    update, stop = _progress_bar()
    try:
        res = run_scenario(sc, args.seed, progress=update)
    except TopologyError as exc:
        stop()
        print(f"meshota sim: {exc}", file=sys.stderr)
        return 2
    stop()
    print_summary(res.summary)
    metrics = write_metrics(res.summary, args.out)
    plots = (
        []
        if args.no_plots
        else __import__("mesh_sim.plots", fromlist=["write_plots"]).write_plots(
            res.summary, res.topology.positions, args.out
        )
    )
    print(f"\nmetrics   {metrics}")
    for p in plots:
        print(f"plot      {p}")
    print(f"wall      {res.wall_s:.1f} s")
    return 0 if run_succeeded(res.summary, res.radio.alive) else 1


def run_succeeded(summary: dict[str, Any], alive: list[bool]) -> bool:
    """No tampered install, and every node still alive at the end installed the image."""
    done = summary["per_node"]["completion_s"]
    return summary["tampered_installs"] == 0 and all(
        t is not None for t, up in zip(done, alive, strict=True) if up
    )
