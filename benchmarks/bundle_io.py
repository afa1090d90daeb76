"""Bundle export, verify and import of a large artifact: wall time and peak RSS, streamed.

    PYTHONPATH=. .venv/bin/python benchmarks/bundle_io.py [--size-mib 1024] [--small-mib 1]

Set-up (not measured): two servers' SQLite databases and artifact stores (A connected, B the
site), each with the same nodes enrolled; at A a signed Mender artifact whose payload is
``--size-mib`` MiB of random bytes (made by ``mender-artifact``, ``--compression none``) and a
deployment to every node; a signing repository at A, B pins its root.

Measured, each step a fresh ``meshota bundle`` process (``os.wait4`` gives its own peak RSS):
``export`` at A, ``verify`` at B, ``import`` at B (verify, relocate into B's artifact store,
the vendor-signature check of the upload path, the deployment). Baselines in the same run:

- time: one Python process that reads the artifact once, hashes it (SHA-256) and writes a copy:
  the floor for any step that must read and check every byte (export = read+hash+write,
  verify = read+hash, import = verify + copy + hash + the artifact parser's pass);
- memory: the same three steps for a ``--small-mib`` artifact. Peak RSS big/small near 1.0 is
  what "streamed, never read whole into memory" means: memory does not grow with the artifact.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_CHUNK = 1 << 20


# Each step runs under this wrapper, which reports the process's own peak RSS (VmHWM of its
# address space) at exit. Not os.wait4's ru_maxrss: on Linux that keeps the forked copy of the
# parent's RSS from before exec, which here is the set-up's.
_WRAPPER = """
import atexit, runpy, sys
def _hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            sys.stderr.write('VMHWM ' + line.split()[1] + chr(10))
atexit.register(_hwm)
sys.argv = sys.argv[1:]
if sys.argv[0] == '-c':
    code = sys.argv[1]
    sys.argv = sys.argv[1:]
    exec(compile(code, '<step>', 'exec'), {'__name__': '__main__'})
else:
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def run_measured(argv: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KiB of that process, stdout) of ``python -m MODULE ARGS`` or
    ``python -c CODE ARGS`` (``argv`` without the interpreter)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    err = r.stderr.decode()
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed ({r.returncode}): {err[-2000:]}")
    hwm = [line for line in err.splitlines() if line.startswith("VMHWM ")]
    return wall, int(hwm[-1].split()[1]), r.stdout.decode()


def make_artifact(work: Path, size: int, vendor_pem: Path) -> Path:
    payload = work / "payload" / "firmware.bin"
    payload.parent.mkdir(parents=True)
    with payload.open("wb") as fh:
        left = size
        while left:
            n = min(left, 16 * _CHUNK)
            fh.write(os.urandom(n))
            left -= n
    out = work / "fw-2.0.mender"
    cmd = [
        "mender-artifact", "write", "module-image", "-T", "single-file", "-t", "meshota-sim", "-n", "fw-2.0",
        "-o", str(out), "--compression", "none", "-f", str(payload), "-k", str(vendor_pem),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
    payload.unlink()
    return out


def set_up(work: Path, size: int, nodes: int) -> dict[str, str]:
    """Servers A and B on disk, the artifact and deployment at A, the signing repo and trust."""
    from cryptography.hazmat.primitives import serialization

    from bridge.api import store_staged_artifact
    from bridge.artifacts import Limits
    from mesh_sim.server import ApiServer
    from meshota.bundle._server import DEFAULT_OPERATOR

    a = ApiServer(work / "A")
    b = ApiServer(work / "B", vendor_key=a.vendor_key)
    try:
        artifact = make_artifact(work, size, a.vendor_pem)
        a.login_admin()
        b.login_admin()

        async def upload() -> str:
            with a.ctx.blobs.staging() as staged:
                await asyncio.to_thread(shutil.copyfile, artifact, staged)
                return await store_staged_artifact(a.ctx, staged, "benchmark firmware", by=DEFAULT_OPERATOR)

        assert Limits().payload_size >= size
        a.run(upload())
        artifact.unlink()
        for v in range(nodes):
            a.enroll(v, "fw-1.0")
            b.enroll(v, "fw-1.0")
        deployment = a.create_deployment("benchmark", "fw-2.0")
        vendor = work / "vendor.pub.pem"
        vendor.write_bytes(
            a.vendor_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    finally:
        a.close()
        b.close()
    return {"deployment": deployment, "vendor": str(vendor)}


def measure(work: Path, size: int, nodes: int) -> dict[str, tuple[float, int]]:
    info = set_up(work, size, nodes)
    mb = ["meshota", "bundle"]
    a = ["--db", f"sqlite:///{work / 'A' / 'meshota.sqlite'}", "--artifacts", str(work / "A" / "artifacts")]
    b = ["--db", f"sqlite:///{work / 'B' / 'meshota.sqlite'}", "--artifacts", str(work / "B" / "artifacts")]
    repo, keys, trust, out = work / "repo", work / "root-keys", work / "trust", work / "bundle.tar"
    run_measured([*mb, "init", "--repo", str(repo), "--root-keys", str(keys)])
    run_measured([*mb, "pin", "--trust", str(trust), str(repo / "root_history" / "1.root.json")])
    steps = {
        "export": [*mb, "export", *a, "--repo", str(repo), "--deployment", info["deployment"],
                   "--expires", "30d", "-o", str(out)],
        "verify": [*mb, "verify", "--trust", str(trust), str(out)],
        "import": [*mb, "import", *b, "--trust", str(trust), "--verify-key", info["vendor"], str(out)],
    }  # fmt: skip
    results = {}
    for name, argv in steps.items():
        wall, rss, stdout = run_measured(argv)
        if name == "import":
            assert "relocated into the artifact store" in stdout, stdout
        results[name] = (wall, rss)
    blob = next((work / "A" / "artifacts" / "objects").glob("*/*"))
    code = (
        "import hashlib, shutil, sys\n"
        "h = hashlib.sha256()\n"
        "with open(sys.argv[1], 'rb') as src, open(sys.argv[2], 'wb') as dst:\n"
        "    while chunk := src.read(1 << 20):\n"
        "        h.update(chunk)\n"
        "        dst.write(chunk)\n"
        "print(h.hexdigest())\n"
    )
    results["copy+hash"] = run_measured(["-c", code, str(blob), str(work / "copy")])[:2]
    results["bundle size"] = (float(out.stat().st_size), 0)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--small-mib", type=int, default=1)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = p.parse_args()
    if shutil.which("mender-artifact") is None:
        print(
            "bundle_io: mender-artifact is not installed (apt-get install -y mender-artifact)",
            file=sys.stderr,
        )
        return 2
    base = Path(tempfile.mkdtemp(prefix="meshota-bundle-io-", dir=args.dir))
    try:
        small = measure(base / "small", args.small_mib << 20, args.nodes)
        big = measure(base / "big", args.size_mib << 20, args.nodes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    size_b = big["bundle size"][0]
    print(f"bundle of a {args.size_mib} MiB artifact: {size_b / (1 << 20):.1f} MiB on disk; "
          f"baseline bundle of {args.small_mib} MiB")  # fmt: skip
    floor = big["copy+hash"][0]
    print(f"{'step':<9} {'wall s':>7} {'MiB/s':>6} {'x copy+hash':>11} {'small wall s':>12} "
          f"{'peak RSS MiB':>12} {'small RSS MiB':>13} {'RSS ratio':>9}")  # fmt: skip
    for step in ("export", "verify", "import", "copy+hash"):
        wall, rss = big[step]
        swall, srss = small[step]
        print(
            f"{step:<9} {wall:7.1f} {size_b / (1 << 20) / wall:6.0f} {wall / floor:11.2f} {swall:12.1f} "
            f"{rss / 1024:12.1f} {srss / 1024:13.1f} {rss / srss:9.2f}"
        )
    print("x copy+hash: the step's wall time over one read + SHA-256 + write of the artifact (same run);")
    print(
        f"RSS ratio: peak RSS with the {args.size_mib} MiB artifact over the same step "
        f"with {args.small_mib} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
