"""PNG plots of a run (matplotlib, Agg backend): topology coloured by completion time, completion
over time (every method), bytes on air per node. matplotlib is optional: without it no PNG is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def write_plots(summary: dict[str, Any], positions: list[tuple[float, float]], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    per = summary["per_node"]
    done = per["completion_s"]
    parent = per["parent"]
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 6))
    for v, p in enumerate(parent):
        if p >= 0:
            ax.plot(*zip(positions[v], positions[p], strict=True), color="0.8", lw=0.6, zorder=1)
    xs = [x for x, _ in positions]
    ys = [y for _, y in positions]
    finite = [t for t in done if t is not None]
    colours = [t if t is not None else (max(finite) if finite else 0.0) for t in done]
    sc = ax.scatter(xs, ys, c=colours, cmap="viridis", s=18 if len(xs) > 300 else 40, zorder=2)
    missing = [v for v, t in enumerate(done) if t is None]
    if missing:
        ax.scatter(
            [xs[v] for v in missing],
            [ys[v] for v in missing],
            marker="x",
            color="red",
            zorder=3,
            label="not installed",
        )
        ax.legend(loc="upper right")
    roots = summary["roots"]
    ax.scatter([xs[r] for r in roots], [ys[r] for r in roots], marker="*", s=200, color="orange", zorder=4)
    fig.colorbar(sc, ax=ax, label="install time after stream start (s)")
    ax.set_title(f"{summary['scenario']}: {summary['nodes']} nodes, {summary['profile']} (★ root)")
    ax.set_aspect("equal", adjustable="datalim")
    paths.append(out_dir / "topology.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [("group stream", finite)]
    for key, label in (("mupgrade", "Mupgrade-style (fluid model)"), ("unicast", "unicast (fluid model)")):
        if key in summary:
            curves.append((label, summary[key].get("completion_per_node_s", [])))
    for label, ends in curves:
        times = sorted(ends)
        if times:
            ax.step([0.0, *times], [0, *range(1, len(times) + 1)], where="post", label=label)
    ax.set_xscale("symlog", linthresh=10.0)
    ax.set_xlabel("seconds after the stream started")
    ax.set_ylabel("nodes installed")
    ax.set_title("completion over time")
    ax.axhline(summary["nodes"], color="0.7", ls="--", lw=0.8)
    ax.legend(loc="upper left")
    paths.append(out_dir / "completion.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    order = sorted(range(len(done)), key=lambda v: (per["depth"][v], v))
    ax.bar(range(len(order)), [per["bytes_tx"][v] / 1024 for v in order], width=1.0)
    ax.set_xlabel("node (sorted by depth)")
    ax.set_ylabel("KiB transmitted")
    ax.set_title("bytes on air per node (group stream)")
    paths.append(out_dir / "bytes_per_node.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
