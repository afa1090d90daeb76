"""mesh_sim scale and efficiency.

    .venv/bin/python benchmarks/sim_scale.py            # 100 and 1,000 nodes + efficiency table
    .venv/bin/python benchmarks/sim_scale.py --big      # also 10,000 nodes (minutes)

Wall time for N nodes × 256 KiB (random geometric mesh, 5 % loss, control plane on the real MQTT-SN
objects, group stream, baselines), then the 100-node multi-hop efficiency table on both radio
profiles (issue 21): bytes, frames, completion time and energy (sum and busiest node) of every
method, and each target (vs Mupgrade-style: ≥ 2× fewer bytes, ≤ 0.7× completion, ≤ 0.8× energy;
vs unicast ≥ 10× WiFi / ≥ 8× 802.15.4; group/lower bound in frames ≤ 1.3×), met or not.

    .venv/bin/python benchmarks/sim_scale.py --efficiency   # the efficiency table only
    .venv/bin/python benchmarks/sim_scale.py --profile 802.15.4 --sizes 1000 --no-efficiency

``--sizes`` runs only the given node counts (comma-separated); every row prints wall and CPU seconds
(the machine may be shared: CPU is the fairer figure) and the clock's event count.

    .venv/bin/python benchmarks/sim_scale.py --profile 802.15.4 --sizes 1000 --compare-bursts

``--compare-bursts`` runs each size twice in the same process, a block's parts as one radio burst
(the model on main) and each part as its own datagram (``[stream] bursts = false``, the model before),
and prints the CPU ratio (802.15.4: parts only exist there).

    .venv/bin/python benchmarks/sim_scale.py --profile 802.15.4 --sizes 1000 --baseline --repeat 2
    .venv/bin/python benchmarks/sim_scale.py --profile wifi-mesh --sizes 10000 --baseline

``--baseline`` is how issue 21's simulator targets are judged on a noisy host: it extracts the commit
the issue's figures were measured on (``BASELINE``, "36 s today" for 1,000 nodes on 802.15.4, "172 s"
for 10,000 on WiFi; ``git archive`` into a temporary directory, so the clone needs that history) and
runs the same scenario with that code and with this tree, each in a fresh interpreter, one after
the other, the order alternating over ``--repeat`` rounds (``--together``: both at once, one core
each — a change of the host's speed then hits both, but each run slows the other by its own mix:
at 10,000 nodes it read 0.887× where one after the other read 0.771×), and prints this tree's CPU
over the baseline's: the target is the issue's ratio, 30/36 = 0.833 and 120/172 = 0.698.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

from mesh_sim.runner import run_scenario
from mesh_sim.scenario import parse_scenario

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "mesh_sim" / "scenarios" / "random-100-multihop.toml"
# the parent of issue 21's first commit: the code its "36 s today" and "172 s" were measured on
BASELINE = "9818903b021c831bfbc6d915d812176c6108a406"
# issue 21's simulator targets as ratios to that code: (target s, baseline s on the issue's host)
BASELINE_TARGETS = {("802.15.4", 1000): (30.0, 36.0), ("wifi-mesh", 10_000): (120.0, 172.0)}


def scenario(nodes: int, profile: str, loss: object, seed: int = 1, bursts: bool = True) -> dict[str, object]:
    return {
        "name": f"scale-{nodes}-{profile}",
        "seed": seed,
        "topology": {"kind": "random", "nodes": nodes, "loss": loss},
        "radio": {"profile": profile},
        "image": {"size": 256 * 1024},
        # the collection window must cover every node's request: 10,000 nodes wake over ~250 s
        "collection": {"window": 10.0 if nodes <= 1000 else 600.0},
        "stream": {"bursts": bursts},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true", help="also run 10,000 nodes")
    ap.add_argument("--profile", default="wifi-mesh", choices=("wifi-mesh", "802.15.4"))
    ap.add_argument("--efficiency", action="store_true", help="only the 100-node efficiency table")
    ap.add_argument("--no-efficiency", action="store_true", help="skip the efficiency table")
    ap.add_argument("--sizes", help="comma-separated node counts (default 100,1000; --big adds 10000)")
    ap.add_argument(
        "--compare-bursts", action="store_true", help="each size also with every part its own datagram"
    )
    ap.add_argument(
        "--baseline", action="store_true", help="CPU ratio to the code issue 21 was measured on, same run"
    )
    ap.add_argument("--repeat", type=int, default=1, help="--baseline: rounds (the order alternates)")
    ap.add_argument("--together", action="store_true", help="--baseline: both runs at once, one core each")
    args = ap.parse_args()
    if args.baseline:
        sizes = [int(x) for x in (args.sizes or "1000").split(",") if x.strip()]
        baseline(args.profile, sizes, max(1, args.repeat), args.together)
        return
    if args.efficiency:
        efficiency()
        return
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    else:
        sizes = [100, 1000] + ([10_000] if args.big else [])
    # issue 21: 1,000 nodes on 802.15.4 <= 30 s, 10,000 on WiFi <= 120 s (wall)
    targets = {("802.15.4", 1000): 30.0, ("wifi-mesh", 10_000): 120.0}
    print(f"scale: random geometric mesh, {args.profile}, 256 KiB image, 5 % loss")
    print(
        f"{'nodes':>7} {'wall s':>8} {'cpu s':>8} {'target s':>9} {'virtual s':>10} {'installed':>10} "
        f"{'events':>10} {'events/s':>10}"
    )
    for n in sizes:
        cpus = []
        for bursts in (True, False) if args.compare_bursts else (True,):
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_scenario(parse_scenario(scenario(n, args.profile, 0.05, bursts=bursts)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            cpus.append(cpu)
            s = res.summary
            tgt = targets.get((args.profile, n))
            print(
                f"{n:>7} {wall:>8.1f} {cpu:>8.1f} {tgt if tgt else '-':>9} "
                f"{s['group_stream']['completion_s']:>10.1f} {s['installed']:>10} {res.clock.events_run:>10} "
                f"{res.clock.events_run / wall:>10.0f}" + ("" if bursts else "  (parts one by one)")
            )
        if len(cpus) == 2:
            print(f"{'':>7} bursts / one by one, CPU: {cpus[0] / cpus[1]:.2f}")
    if not args.no_efficiency:
        print()
        efficiency()


# run in a fresh interpreter with a source tree first on sys.path: nothing of this tree is imported
WORKER = """
import json, sys, time
root, sc = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, root)
import mesh_sim
from mesh_sim.runner import run_scenario
from mesh_sim.scenario import parse_scenario
t0, c0 = time.perf_counter(), time.process_time()
res = run_scenario(parse_scenario(sc))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
s = res.summary
print(json.dumps({"code": mesh_sim.__file__, "wall": wall, "cpu": cpu, "events": res.clock.events_run,
                  "virtual": s["group_stream"]["completion_s"], "installed": s["installed"]}))
"""


def _extract_baseline(into: Path) -> None:
    try:
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", BASELINE], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        sys.exit(
            f"--baseline needs git and commit {BASELINE[:12]} in this clone: {err.decode().strip() or e!s}"
        )
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")


def _start_worker(tree: Path, nodes: int, profile: str) -> subprocess.Popen[str]:
    sc = scenario(nodes, profile, 0.05)
    del sc["stream"]  # the defaults: the baseline's code knows no [stream] table
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-c", WORKER, str(tree), json.dumps(sc)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)


def baseline(profile: str, sizes: list[int], repeat: int, together: bool) -> None:
    """This tree's CPU over the baseline commit's on the same scenario, fresh interpreters, same run."""
    print(f"scale vs baseline {BASELINE[:12]}: random geometric mesh, {profile}, 256 KiB image, 5 % loss")
    head = f"{'nodes':>7} {'code':<9} {'cpu s':>8} {'wall s':>8} {'virtual s':>10} "
    print(head + f"{'installed':>10} {'events':>10}")
    with tempfile.TemporaryDirectory(prefix="meshota-baseline-") as tmp:
        _extract_baseline(Path(tmp))
        trees = {"baseline": Path(tmp), "this": REPO}
        for n in sizes:
            cpu: dict[str, float] = {"baseline": 0.0, "this": 0.0}
            for r in range(repeat):
                order = ("baseline", "this") if r % 2 == 0 else ("this", "baseline")
                # together: both at once, one core each (a change of the host's speed hits both);
                # else one after the other
                for group in [order] if together else [(name,) for name in order]:
                    runs = {name: _start_worker(trees[name], n, profile) for name in group}
                    for name, proc in runs.items():
                        stdout, stderr = proc.communicate()
                        if proc.returncode != 0:
                            sys.exit(f"the {name} run failed:\n{stderr}")
                        out = json.loads(stdout.strip().splitlines()[-1])
                        if not Path(out["code"]).resolve().is_relative_to(trees[name].resolve()):
                            sys.exit(
                                f"the {name} run imported {out['code']}, not the code under {trees[name]}"
                            )
                        cpu[name] += out["cpu"]
                        row = f"{n:>7} {name:<9} {out['cpu']:>8.1f} {out['wall']:>8.1f} "
                        print(
                            row + f"{out['virtual']:>10.1f} {out['installed']:>10} {out['events']:>10}",
                            flush=True,
                        )
            ratio = cpu["this"] / cpu["baseline"]
            tgt = BASELINE_TARGETS.get((profile, n))
            if tgt is None:
                print(f"{n:>7} this/baseline CPU {ratio:.3f}× (no target for this size and profile)")
            else:
                goal = tgt[0] / tgt[1]
                print(
                    f"{n:>7} this/baseline CPU {ratio:.3f}×  target <= {goal:.3f} ({tgt[0]:.0f} s of the "
                    f"baseline's {tgt[1]:.0f} s)  {'met' if ratio <= goal else 'NOT met'}"
                )


def efficiency() -> None:
    """Every target of issue 21 from one run per radio profile (same topology, seed and losses)."""
    print("efficiency, 100 nodes multi-hop (random geometric, mean degree 8, loss 2-8 %, seed 1),")
    print(
        "every method on the same topology, tree, losses and seed; energy: radio states, mesh_sim/energy.py"
    )
    for profile in ("802.15.4", "wifi-mesh"):
        sc = tomllib.loads(TABLE.read_text())  # meshota sim mesh_sim/scenarios/random-100-multihop.toml
        sc["radio"]["profile"] = profile
        s = run_scenario(parse_scenario(sc)).summary
        print(
            f"\n{profile}: depth {s['max_depth']}, {s['forwarders']} forwarders, "
            f"{s['installed']}/100 installed"
        )
        print(
            f"  {'method':<13} {'bytes on air':>13} {'frames':>10} {'completion s':>13} "
            f"{'energy J':>9} {'max node J':>11}"
        )
        for key in ("group_stream", "mupgrade", "unicast"):
            r = s[key]
            print(
                f"  {r['name']:<13} {r['bytes_on_air']:>13,} {r['frames']:>10,} {r['completion_s']:>13.1f} "
                f"{r['energy_mj'] / 1000:>9.1f} {r['energy_max_node_mj'] / 1000:>11.2f}"
            )
        lb = s["lower_bound"]
        print(
            f"  {'lower bound':<13} {int(lb['payload_bytes']):>13,} {int(lb['frames']):>10,} "
            f"{lb['completion_s']:>13.1f}"
        )
        r = s["ratios"]
        uni_target = 10.0 if profile == "wifi-mesh" else 8.0
        rows = [
            ("Mupgrade/group bytes", r["mupgrade_over_group"], ">=", 2.0),
            ("unicast/group bytes", r["unicast_over_group"], ">=", uni_target),
            ("group/lower bound, frames", r["group_frames_over_lower_bound"], "<=", 1.3),
            ("group/lower bound, bytes in whole frames", r["group_over_lower_bound_frames"], "<=", 1.3),
            ("group/Mupgrade completion", r["group_over_mupgrade_completion"], "<=", 0.7),
            ("group/Mupgrade energy (sum)", r["group_over_mupgrade_energy"], "<=", 0.8),
            ("group/Mupgrade energy (max node)", r["group_over_mupgrade_energy_max_node"], "<=", 0.8),
        ]
        for name, value, op, target in rows:
            met = value >= target if op == ">=" else value <= target
            print(f"  {name:<42} {value:>7.3f}×  target {op} {target}  {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
