"""Per-node and total metrics of a run, with the baselines on the same topology and seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import baselines as bl

if TYPE_CHECKING:
    from .runner import RunResult

__all__ = ["summarize", "write_metrics"]


def summarize(res: RunResult, seed: int) -> dict[str, Any]:
    sc, radio, gs, tree, topo = res.scenario, res.radio, res.stream, res.tree, res.topology
    n = topo.n
    done = [t for t in gs.installed_at if t is not None]
    forwarders = len(tree.forwarders())
    tx_air = radio.tx_time
    group: dict[str, Any] = {
        "name": "group stream",
        "bytes_on_air": sum(radio.bytes_tx),
        "frames": sum(radio.frames_tx),
        "completion_s": round(max(done) - res.stream_start, 3) if done else None,
        "busiest_neighbourhood_s": round(bl.busiest_neighbourhood(topo, tx_air), 3),
        "energy_mj": round(sum(radio.energy_mj(v) for v in range(n)), 1),
        "rounds": max((s.rounds for s in gs.sessions), default=0),
    }
    lb = bl.lower_bound(radio.profile, sc.image_size, forwarders)
    out: dict[str, Any] = {
        "scenario": sc.name,
        "seed": seed,
        "nodes": n,
        "profile": radio.profile.name,
        "topology": topo.kind,
        "roots": list(tree.roots),
        "max_depth": max(tree.depth),
        "forwarders": forwarders,
        "image_bytes": sc.image_size,
        "chunks": gs.map.chunk_count,
        "map_parts": gs.n_parts,
        "installed": len(done),
        "not_installed": sorted(v for v in range(n) if gs.installed_at[v] is None),
        "tampered_installs": sum(
            1 for v in range(n) if gs.installed_at[v] is not None and gs.images[v].chunk_map is not gs.map
        ),
        "rejected_chunks": sum(img.rejected_chunks for img in gs.images),
        "rejected_maps": sum(img.rejected_maps for img in gs.images),
        "fallback_nodes": len(gs.fallback_nodes),
        "reelections": gs.reelections,
        "frames_by_kind": {
            "stream": gs.stream_frames,
            "repair": gs.repair_frames,
            "status": gs.status_frames,
            "fallback": gs.fallback_frames,
            "control": res.control.frames if res.control else 0,
        },
        "control_plane": {
            "requests_at_broker": len(res.control.group()) if res.control else None,
            "gateway_sessions": len(res.control.gateway.sessions()) if res.control else None,
        },
        "uplink_bytes": gs.uplink_bytes,
        "trace_hash": res.trace_hash,
        "group_stream": group,
        "lower_bound": lb,
        "per_node": {
            "completion_s": [None if t is None else round(t - res.stream_start, 3) for t in gs.installed_at],
            "bytes_tx": radio.bytes_tx,
            "frames_tx": radio.frames_tx,
            "energy_mj": [round(radio.energy_mj(v), 2) for v in range(n)],
            "depth": tree.depth,
            "parent": tree.parent,
        },
    }
    if sc.baselines:
        uni = bl.unicast(topo, tree, radio.profile, sc.image_size, seed)
        mup = bl.mupgrade(topo, tree, radio.profile, sc.image_size, seed)
        out["unicast"] = uni.as_dict()
        out["mupgrade"] = mup.as_dict()
        g = group["bytes_on_air"]
        out["ratios"] = {
            "unicast_over_group": round(uni.bytes_on_air / g, 2),
            "mupgrade_over_group": round(mup.bytes_on_air / g, 2),
            "group_over_lower_bound_payload": round(g / lb["payload_bytes"], 3),
            "group_over_lower_bound_frames": round(g / lb["frame_bytes_on_air"], 3),
        }
    return out


def write_metrics(summary: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(summary, indent=1))
    return path
