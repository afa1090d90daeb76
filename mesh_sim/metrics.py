"""Per-node and total metrics of a run, with the baselines on the same topology and seed."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from firmware_proto import boot as bootmod
from wire.chunk_map import leaves_per_page

from . import baselines as bl
from .energy import awake_until, node_energy
from .result import RunResult
from .sizing import default_chunk_size

__all__ = ["summarize", "write_metrics"]


STREAM_KINDS = ("data", "stream-control", "feedback", "fallback")


def _running_sha(res: RunResult, v: int) -> bytes | None:
    flash = res.stream.nodes[v].flash
    info = bootmod.read_slot_info(flash, bootmod.read_boot(flash).active)
    return info.sha256 if info is not None else None


def summarize(res: RunResult, seed: int) -> dict[str, Any]:
    sc, radio, gs, tree, topo = res.scenario, res.radio, res.stream, res.tree, res.topology
    n = topo.n
    start = res.stream_start
    done = [node.success_at for node in gs.nodes]
    finished = [t for t in done if t is not None]
    forwarders = len(tree.forwarders())
    chunk = gs.params.chunk_size
    by_kind = radio.bytes_by_kind
    stream_bytes = sum(by_kind.get(k, 0) for k in STREAM_KINDS)
    stream_frames = sum(radio.frames_by_kind.get(k, 0) for k in STREAM_KINDS)
    good = {hashlib.sha256(gs.artifact).digest()}
    # a node that reported success must run exactly the signed artifact (not a tampered or old one)
    tampered = sum(
        1 for v in range(n) if gs.nodes[v].success_at is not None and _running_sha(res, v) not in good
    )
    roots_rounds = [f.rounds for f in gs.finished]
    group: dict[str, Any] = {
        "name": "group stream",
        "bytes_on_air": stream_bytes,
        "frames": stream_frames,
        "completion_s": round(max(finished) - start, 3) if finished else None,
        "busiest_neighbourhood_s": round(bl.busiest_neighbourhood(topo, radio.tx_time), 3),
        "rounds": max(roots_rounds, default=0),
    }
    # baselines and the lower bound in frames use their own best datagram: the largest chunk that
    # fits one datagram (fewest headers; per-fragment link ACKs make big datagrams cheap for unicast)
    best = default_chunk_size(radio.profile, len(gs.artifact))
    lb = bl.lower_bound(radio.profile, sc.image_size, best, forwarders)
    chunks = math.ceil(len(gs.artifact) / chunk)
    head_pages = math.ceil(chunks / leaves_per_page(chunk))
    out: dict[str, Any] = {
        "scenario": sc.name,
        "seed": seed,
        "nodes": n,
        "profile": radio.profile.name,
        "topology": topo.kind,
        "roots": list(tree.roots),
        "roots_at_end": list(gs.tree.roots),
        "max_depth": max(tree.depth),
        "forwarders": forwarders,
        "image_bytes": len(gs.artifact),
        "chunk_size": chunk,
        "baseline_chunk_size": best,
        "chunks": -(-len(gs.artifact) // chunk),
        "map_pages": head_pages,
        "stream_start_s": round(start, 3),
        "installed": len(finished),
        "not_installed": sorted(v for v in range(n) if done[v] is None),
        "failed": sorted(v for v in range(n) if gs.nodes[v].final == "failure"),
        "tampered_installs": tampered,
        "rejected_chunks": gs.count_events("rejected: chunk hash mismatch"),
        "rejected_maps": gs.count_events("head rejected"),
        "fallback_nodes": sum(1 for v in range(n) if any("fallback:" in e for e in gs.agent_events(v))),
        "fallback_bytes": gs.fallback_bytes,
        "reelections": gs.reelections,
        "root_fetches": gs.root_fetches,
        "streams": len(gs.finished),
        "bytes_by_kind": dict(sorted(by_kind.items())),
        "frames_by_kind": dict(sorted(radio.frames_by_kind.items())),
        "control_plane": {
            "requests_at_broker": len(res.control.group()) if res.control else None,
            "gateway_sessions": len(res.control.gateway.sessions()) if res.control else None,
        },
        "uplink_bytes": gs.uplink_bytes,
        "events": res.clock.events_run,
        "virtual_s": round(res.clock.now, 3),
        "trace_hash": res.trace_hash,
        "group_stream": group,
        "lower_bound": lb,
        "per_node": {
            "completion_s": [None if t is None else round(t - start, 3) for t in done],
            "bytes_tx": radio.bytes_tx,
            "frames_tx": radio.frames_tx,
            "depth": tree.depth,
            "parent": tree.parent,
            "boots": [node.boots for node in gs.nodes],
        },
    }
    # energy: radio states over one horizon for every method (mesh_sim/energy.py)
    rel = [None if t is None else t - start for t in done]
    last_air = [max(0.0, t - start) for t in radio.last_tx_end]
    methods: list[bl.BaselineResult] = []
    if sc.baselines:
        methods = [
            bl.mupgrade(topo, tree, radio.profile, sc.image_size, best, seed),
            bl.unicast(topo, tree, radio.profile, sc.image_size, best, seed),
        ]
    slept = [None if t is None else max(0.0, t - start) for t in gs.asleep_at]
    ends = [t for t in rel if t is not None] + [m.completion_s for m in methods]
    horizon = max([*ends, *last_air, *(t for t in slept if t is not None), 0.0])
    g_until = awake_until(tree, rel, horizon)  # the energy model's rule: when it could sleep
    if gs.params.sleep:  # the radio's own state: awake until it went to sleep (GroupSim._try_sleep);
        # still awake when the run stopped (every node through; a relay ending its stream's last
        # rounds): to then, or the rule's time if later (a node that never got the update)
        end = max(0.0, res.clock.now - start)
        g_until = [max(u, end) if t is None else t for t, u in zip(slept, g_until, strict=True)]
    g_awake = [max(a, b) for a, b in zip(g_until, last_air, strict=True)]
    g_energy = node_energy(radio.profile, radio.tx_time, radio.rx_time, g_awake, horizon)
    group["energy_mj"] = g_energy.sum_mj
    group["energy_max_node_mj"] = g_energy.max_mj
    group["energy_max_node"] = g_energy.max_node
    out["energy_horizon_s"] = round(horizon, 3)
    out["per_node"]["energy_mj"] = [round(e, 2) for e in g_energy.per_node_mj]
    for m in methods:
        awake = awake_until(tree, m.done_s, horizon)
        e = node_energy(radio.profile, m.tx_s, m.rx_s, awake, horizon)
        d = m.as_dict()
        d["energy_mj"] = e.sum_mj
        d["energy_max_node_mj"] = e.max_mj
        d["energy_max_node"] = e.max_node
        d["completion_per_node_s"] = [round(t, 3) for t in m.done_s]
        out["mupgrade" if m.name == "mupgrade" else "unicast"] = d
    if methods:
        mup, uni = out["mupgrade"], out["unicast"]
        g = group["bytes_on_air"]
        gc = group["completion_s"]
        out["ratios"] = {
            "unicast_over_group": round(uni["bytes_on_air"] / g, 2),
            "mupgrade_over_group": round(mup["bytes_on_air"] / g, 2),
            "group_over_lower_bound_payload": round(g / lb["payload_bytes"], 3),
            "group_over_lower_bound_frames": round(g / lb["frame_bytes_on_air"], 3),
            "group_frames_over_lower_bound": round(group["frames"] / lb["frames"], 3),
            "group_over_mupgrade_completion": None if gc is None else round(gc / mup["completion_s"], 3),
            "group_over_mupgrade_energy": round(group["energy_mj"] / mup["energy_mj"], 3),
            "group_over_mupgrade_energy_max_node": round(
                group["energy_max_node_mj"] / mup["energy_max_node_mj"], 3
            ),
        }
    return out


def write_metrics(summary: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(summary, indent=1))
    return path
