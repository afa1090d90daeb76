"""The run's summary as a user reads it: the table ``meshota sim`` and ``meshota demo`` print, and
the pass rule (every live node installed, none installed a tampered image)."""

from __future__ import annotations

from typing import Any

__all__ = ["print_summary", "run_succeeded"]


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
    print(
        f"{'method':<14} {'bytes on air':>15} {'frames':>11} {'completion s':>13} "
        f"{'energy J':>10} {'max node J':>11}"
    )
    for name, r in rows:
        print(
            f"{name:<14} {_fmt(r['bytes_on_air']):>15} {_fmt(r['frames']):>11} "
            f"{_fmt(r['completion_s']):>13} {_fmt(r['energy_mj'] / 1000):>10} "
            f"{_fmt(r['energy_max_node_mj'] / 1000):>11}"
        )
    lb = s["lower_bound"]
    print(
        f"{'lower bound':<14} {_fmt(int(lb['payload_bytes'])):>15} {_fmt(int(lb['frames'])):>11} "
        f"{_fmt(lb['completion_s']):>13} {'':>10} {'':>11}   (image bytes × forwarders)"
    )
    print(
        f"energy: radio states tx/rx/idle listening/sleep over {_fmt(s['energy_horizon_s'])} s for every "
        "method (mesh_sim/energy.py)"
    )
    other = {k: v for k, v in s["bytes_by_kind"].items() if k in ("status", "control")}
    print(f"not compared (every method pays them): {other} bytes on air")
    if "ratios" in s:
        r = s["ratios"]
        print(
            f"\ngroup stream: {r['unicast_over_group']}× fewer bytes than unicast, "
            f"{r['mupgrade_over_group']}× fewer than Mupgrade-style, "
            f"{r['group_over_lower_bound_payload']}× the lower bound "
            f"({r['group_over_lower_bound_frames']}× in whole frames on air, "
            f"{r['group_frames_over_lower_bound']}× its frames)"
        )
        print(
            f"vs Mupgrade-style: {r['group_over_mupgrade_completion']}× the completion time, "
            f"{r['group_over_mupgrade_energy']}× the energy, "
            f"{r['group_over_mupgrade_energy_max_node']}× the busiest node's energy"
        )


def run_succeeded(summary: dict[str, Any], alive: list[bool]) -> bool:
    """No tampered install, and every node still alive at the end installed the image."""
    done = summary["per_node"]["completion_s"]
    return summary["tampered_installs"] == 0 and all(
        t is not None for t, up in zip(done, alive, strict=True) if up
    )
