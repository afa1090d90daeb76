"""A bad release: how soon the operator sees the rollout stop, and how many nodes it reached,
5 phases vs 1 phase (same run, same seed, same fleet model).

mesh_sim/rollout.py: 1,000 nodes in 10 sub-meshes against the real handlers on the virtual clock,
check-ins every 600 s x uniform(0.5, 1.5), a root collection window of 60 s, 120 s group stream,
30 s install; the image fails its health check on every node. Gates: error share 10 % of the
devices in opened phases (pause). Phased: Mender phases 20/20/20/20/rest %. Baseline: the same
deployment as one phase (the same gate over all 1,000). Operator-visible time = virtual seconds
from creating the deployment to the ticker's "paused" (30 s ticks); "reached" = nodes the server
handed the artifact to (they downloaded the bad image), counted 30 virtual minutes after the pause.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/rollout_gate.py [--nodes N] [--seed S]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh_sim.rollout import RolloutResult, RolloutScenario, run_rollout

FIVE = ({"batch_size": 20}, {"batch_size": 20}, {"batch_size": 20}, {"batch_size": 20}, {})


def one(
    nodes: int, seed: int, phases: tuple[dict[str, int], ...] | None, work: Path
) -> tuple[RolloutResult, float]:
    sc = RolloutScenario(
        nodes=nodes, submeshes=10, healthy=False, phases=phases, gates={"error_share": 0.1}, seed=seed
    )
    t0 = time.perf_counter()
    res = run_rollout(sc, work)
    return res, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        phased, t_p = one(args.nodes, args.seed, FIVE, Path(tmp) / "phased")
        single, t_s = one(args.nodes, args.seed, None, Path(tmp) / "single")
    rows = [("5 phases", phased, t_p), ("1 phase (baseline)", single, t_s)]
    print(f"bad release, {args.nodes} nodes, error gate 10 %, seed {args.seed}")
    print(
        f"{'':20} {'state':8} {'pause at (s)':>12} {'reached':>8} {'installed':>9} "
        f"{'api calls':>9} {'wall s':>7}"
    )
    for label, r, wall in rows:
        at = f"{r.stopped_at:.0f}" if r.stopped_at is not None else "never"
        print(
            f"{label:20} {r.state:8} {at:>12} {r.reached:>8} {r.installed:>9} {r.api_calls:>9} {wall:>7.1f}"
        )
    if phased.stopped_at is None or single.stopped_at is None:
        print("a run never paused")
        return 1
    print(
        f"ratio phased/single: nodes reached {phased.reached / max(single.reached, 1):.3f}, "
        f"time to pause {phased.stopped_at / single.stopped_at:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
