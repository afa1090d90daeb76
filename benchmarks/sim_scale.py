"""mesh_sim scale and efficiency.

    .venv/bin/python benchmarks/sim_scale.py            # 100 and 1,000 nodes + efficiency table
    .venv/bin/python benchmarks/sim_scale.py --big      # also 10,000 nodes (minutes)

Wall time for N nodes × 256 KiB (random geometric mesh, 5 % loss, control plane on the real MQTT-SN
objects, group stream, baselines), then the 100-node multi-hop efficiency table: group stream vs
unicast (target ≥ 10×), vs Mupgrade-style (≥ 2×), vs the lower bound (≤ 1.3×), all in the same run.
"""

from __future__ import annotations

import argparse
import time

from mesh_sim.runner import run_scenario
from mesh_sim.scenario import parse_scenario


def scenario(nodes: int, profile: str, loss: object, seed: int = 1) -> dict[str, object]:
    return {
        "name": f"scale-{nodes}-{profile}",
        "seed": seed,
        "topology": {"kind": "random", "nodes": nodes, "loss": loss},
        "radio": {"profile": profile},
        "image": {"size": 256 * 1024},
        # the collection window must cover every node's request: 10,000 nodes wake over ~250 s
        "collection": {"window": 10.0 if nodes <= 1000 else 600.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true", help="also run 10,000 nodes")
    ap.add_argument("--profile", default="wifi-mesh", choices=("wifi-mesh", "802.15.4"))
    args = ap.parse_args()
    sizes = [100, 1000] + ([10_000] if args.big else [])
    targets = {1000: 30.0, 10_000: 300.0}
    print(f"scale: random geometric mesh, {args.profile}, 256 KiB image, 5 % loss")
    print(f"{'nodes':>7} {'wall s':>8} {'target s':>9} {'virtual s':>10} {'installed':>10} {'events/s':>10}")
    for n in sizes:
        t0 = time.perf_counter()
        res = run_scenario(parse_scenario(scenario(n, args.profile, 0.05)))
        wall = time.perf_counter() - t0
        s = res.summary
        tgt = targets.get(n)
        print(
            f"{n:>7} {wall:>8.1f} {tgt if tgt else '-':>9} {s['group_stream']['completion_s']:>10.1f} "
            f"{s['installed']:>10} {res.clock.events_run / wall:>10.0f}"
        )
    print()
    print("efficiency, 100 nodes multi-hop (random geometric, loss 2-8 %), same topology and seed:")
    hdr = (
        f"{'profile':<10} {'depth':>5} {'unicast/group':>14} {'mupgrade/group':>15} "
        f"{'group/LB':>9} {'group/LB frames':>16}"
    )
    print(hdr)
    for profile in ("802.15.4", "wifi-mesh"):
        s = run_scenario(parse_scenario(scenario(100, profile, [0.02, 0.08]))).summary
        r = s["ratios"]
        print(
            f"{profile:<10} {s['max_depth']:>5} {r['unicast_over_group']:>13.1f}× "
            f"{r['mupgrade_over_group']:>14.2f}× "
            f"{r['group_over_lower_bound_payload']:>8.2f}× {r['group_over_lower_bound_frames']:>15.2f}×"
        )
    print(
        "targets: unicast/group >= 10, mupgrade/group >= 2, group/LB <= 1.3 "
        "(LB = image bytes × forwarders; 'frames' = the same image in whole frames on air)"
    )


if __name__ == "__main__":
    main()
