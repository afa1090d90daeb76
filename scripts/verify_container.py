"""Build the Dockerfile's image without docker and start it: the honest stand-in for `docker build`
and `docker run` on machines with no docker daemon (run it through scripts/verify_container.sh).

1. A fresh Debian bookworm rootfs (debootstrap --variant=minbase, trimmed like the official
   debian:bookworm-slim image: no apt lists, the same dpkg path excludes and apt sources), cached
   as a tarball under /var/cache/meshota (``--refresh-base`` rebuilds it).
2. The Dockerfile's steps, read from the Dockerfile itself (tests/support/dockerfile.py): COPY from
   the build context as .dockerignore filters it, RUN as ``/bin/sh -c`` under chroot as the user
   the Dockerfile names at that point, in its WORKDIR, with its ENV and nothing else.
3. The container: the entrypoint + CMD under chroot as the final USER, in a fresh network
   namespace (the fixed ports cannot collide with the host's, nothing else can answer), then the
   HEALTHCHECK command (run inside, as docker does) until it passes, every EXPOSEd port bound, an
   MQTT-SN SEARCHGW answered with GWINFO and a CONNECT with CONNACK on the plain UDP port, a DTLS
   PSK handshake + CONNECT on the DTLS port (from inside, with the PSK file the first start
   wrote, at the addresses ``--print-config`` shows), then SIGTERM and a clean exit (status 0).

Not the same as docker: no layers, no cgroup limits, no user namespace, /dev and /proc of the host;
the volume is the image's own /data (what a fresh named volume starts as). The harness adds
/etc/resolv.conf and /etc/hosts (docker injects both) and /usr/sbin/policy-rc.d (docker has no
init, so package scripts never start services; in a chroot they could).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.dockerfile import (  # noqa: E402
    BuildPlan,
    CopyStep,
    RunStep,
    context_files,
    parse_dockerfile,
    plan_build,
)

BASE = "debian:bookworm-slim"
CACHE = Path(os.environ.get("MESHOTA_ROOTFS_CACHE", "/var/cache/meshota"))
MIRROR = os.environ.get("MESHOTA_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the official debian:bookworm-slim image carries (debuerreotype --slimify, its sources).
SLIM_DPKG = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/all_languages
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
path-include /usr/share/man/man[1-9]/*
path-exclude /usr/share/groff/*
"""
SLIM_SOURCES = """\
Types: deb
URIs: {mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
APT_CLEAN = (
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
    '/var/cache/apt/*.bin || true"; };\nAPT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
)


def log(msg: str) -> None:
    print(f"[verify-container {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failed(Exception):
    pass


def base_rootfs(refresh: bool) -> Path:
    tarball = CACHE / "bookworm-slim-rootfs.tar"
    if tarball.exists() and not refresh:
        log(f"base rootfs: cached {tarball} ({tarball.stat().st_size >> 20} MiB)")
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="meshota-base.") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"base rootfs: debootstrap --variant=minbase bookworm from {MIRROR} (a few minutes)")
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )
        (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG)
        (root / "etc/apt/apt.conf.d/docker-clean").write_text(APT_CLEAN)
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(SLIM_SOURCES.format(mirror=MIRROR))
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tarball.with_suffix(".tar.partial")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.replace(tarball)
    log(f"base rootfs: built and cached in {time.monotonic() - started:.0f} s -> {tarball}")
    return tarball


def passwd_entry(rootfs: Path, user: str) -> tuple[int, int, str]:
    """(uid, gid, home) of ``user`` (a name, ``uid`` or ``uid:gid``) in the image's /etc/passwd."""
    name, _, group = user.partition(":")
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name or fields[2] == name:
            uid, gid, home = int(fields[2]), int(fields[3]), fields[5]
            break
    else:
        if not name.isdigit():
            raise Failed(f"user {name!r} is not in the image's /etc/passwd")
        uid, gid, home = int(name), int(name), "/"
    if group:
        gid = group_id(rootfs, group)
    return uid, gid, home


def group_id(rootfs: Path, group: str) -> int:
    if group.isdigit():
        return int(group)
    for line in (rootfs / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return int(fields[2])
    raise Failed(f"group {group!r} is not in the image's /etc/group")


def in_image(rootfs: Path, user: str, workdir: str, env: dict[str, str], argv: list[str]) -> list[str]:
    """The host command running ``argv`` inside the image as docker would: that user, that
    directory, exactly that environment (+ HOME from /etc/passwd, as docker sets it)."""
    uid, gid, home = passwd_entry(rootfs, user)
    full = {"HOME": home, **env} if "HOME" not in env else dict(env)
    return [
        "chroot", f"--userspec={uid}:{gid}", f"--groups={gid}", str(rootfs),
        "/usr/bin/env", "-i", "-C", workdir, *(f"{k}={v}" for k, v in full.items()), *argv,
    ]


def do_copy(rootfs: Path, context: Path, step: CopyStep) -> int:
    files = list(context_files(context))
    chown = None
    if step.chown:
        user, _, group = step.chown.partition(":")
        uid, gid, _ = passwd_entry(rootfs, user)
        chown = (uid, group_id(rootfs, group) if group else gid)
    copied = 0
    many = len(step.sources) > 1 or step.dest.endswith("/")
    for source in step.sources:
        src = source.strip("/") if source not in (".", "./") else ""
        base = context / src if src else context
        if base.is_file():
            picked = [(src, PurePosixPath(src).name if many else "")]
        elif base.is_dir():
            prefix = f"{src}/" if src else ""
            picked = [(f, f[len(prefix):]) for f in files if f.startswith(prefix)]
        else:
            raise Failed(f"line {step.line}: COPY source {source!r} is not in the build context")
        if base.is_file() and src not in files:
            raise Failed(f"line {step.line}: COPY source {source!r} is excluded by .dockerignore")
        for rel, inside in picked:
            target = rootfs / step.dest.lstrip("/") / inside if inside else rootfs / step.dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(context / rel, target, follow_symlinks=False)
            if chown:
                os.lchown(target, *chown)
            copied += 1
    return copied


BUILD_CA = "/run/verify-container/ca.crt"


def build(plan: BuildPlan, rootfs: Path, context: Path, ca: Path | None) -> dict[str, float]:
    """Every COPY and RUN in order. ``ca``: the build host's CA bundle, for a TLS-intercepting
    proxy between this machine and PyPI (``docker build`` there would need it too, e.g. as a build
    secret); RUN steps then see it as PIP_CERT, and it is removed after the build."""
    timings: dict[str, float] = {}
    extra: dict[str, str] = {}
    if ca is not None:
        (rootfs / BUILD_CA.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, rootfs / BUILD_CA.lstrip("/"))
        extra["PIP_CERT"] = BUILD_CA
        log(f"build: RUN steps get PIP_CERT={BUILD_CA} (a copy of the host's {ca})")
    for step in plan.steps:
        started = time.monotonic()
        if isinstance(step, CopyStep):
            n = do_copy(rootfs, context, step)
            log(f"line {step.line}: COPY {' '.join(step.sources)} {step.dest}: {n} files")
        else:
            assert isinstance(step, RunStep)
            (rootfs / step.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            log(f"line {step.line}: RUN as {step.user} in {step.workdir}: {step.command}")
            env = {**step.env, **extra}
            cmd = in_image(rootfs, step.user, step.workdir, env, ["/bin/sh", "-c", step.command])
            done = subprocess.run(cmd)
            if done.returncode != 0:
                raise Failed(f"line {step.line}: RUN exited {done.returncode}")
        timings[f"line {step.line}"] = time.monotonic() - started
    shutil.rmtree(rootfs / BUILD_CA.lstrip("/").rsplit("/", 1)[0], ignore_errors=True)
    return timings


def check_image(plan: BuildPlan, rootfs: Path) -> None:
    if plan.base != BASE:
        raise Failed(f"FROM {plan.base}: the verifier builds {BASE} only")
    uid, _, _ = passwd_entry(rootfs, plan.user)
    if uid == 0:
        raise Failed("the image runs as root (no USER, or USER root)")
    for volume in plan.volumes:
        st = (rootfs / volume.lstrip("/")).stat()
        if st.st_uid != uid:
            raise Failed(f"VOLUME {volume} is owned by uid {st.st_uid}, not the service user {uid}")
    log(f"image: runs as {plan.user} (uid {uid}); volumes {plan.volumes} owned by it")


def mount_runtime(rootfs: Path) -> list[Path]:
    """What docker gives a container: /proc, a minimal /dev (tmpfs with the standard nodes, its own
    devpts, shm), /etc/resolv.conf and /etc/hosts; plus policy-rc.d (no init: no service starts)."""
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    (rootfs / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# verify_container: no init in a container, no service starts\nexit 101\n")
    policy.chmod(0o755)
    mounted = []

    def mount(args: list[str], target: Path) -> None:
        target.mkdir(exist_ok=True)
        subprocess.run(["mount", *args, str(target)], check=True)
        mounted.append(target)

    mount(["-t", "proc", "proc"], rootfs / "proc")
    dev = rootfs / "dev"
    mount(["-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs"], dev)
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    mount(["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620,gid=5", "devpts"], dev / "pts")
    os.symlink("pts/ptmx", dev / "ptmx")
    mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm"], dev / "shm")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev / name)
    return mounted


def unmount(mounted: list[Path]) -> None:
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


# ---- the container run, inside `unshare --net` -------------------------------------------------


def bound_ports() -> set[tuple[int, str]]:
    """(port, proto) bound in this network namespace: TCP listening, UDP any."""
    found = set()
    for proto, files in (("tcp", ("tcp", "tcp6")), ("udp", ("udp", "udp6"))):
        for name in files:
            path = Path("/proc/net") / name
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if proto == "udp" or fields[3] == "0A":  # 0A = LISTEN
                    found.add((port, proto))
    return found


def mqttsn_probe(port: int) -> tuple[bytes, bytes] | None:
    """SEARCHGW then CONNECT (client id 'verify-container', clean session, keep-alive 30 s) to
    127.0.0.1:port; (GWINFO, CONNACK) or None when the port does not answer SEARCHGW."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3.0)
        s.connect(("127.0.0.1", port))
        s.send(bytes([3, 0x01, 1]))  # SEARCHGW, radius 1
        try:
            gwinfo = s.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return None
        if len(gwinfo) < 3 or gwinfo[1] != 0x02:
            raise Failed(f"udp/{port}: SEARCHGW answered with {gwinfo.hex()}, not GWINFO")
        client = b"verify-container"
        s.send(bytes([6 + len(client), 0x04, 0x04, 0x01, 0, 30]) + client)  # CONNECT, CleanSession
        try:
            connack = s.recv(2048)
        except TimeoutError:
            raise Failed(f"udp/{port}: CONNECT got no answer in 3 s") from None
        if len(connack) != 3 or connack[1] != 0x05:
            raise Failed(f"udp/{port}: CONNECT answered with {connack.hex()}, not CONNACK")
        return gwinfo, connack


# Run inside the image as its user with its venv (what `docker exec` would do): a node's DTLS PSK
# handshake and MQTT-SN CONNECT, with the first identity of the PSK file `meshota up` created.
DTLS_PROBE = """
import asyncio, sys
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.dtls_client import PskClientConfig
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip() and not l.startswith("#")]
identity, key = lines[0].split(",", 1)
async def main():
    config = PskClientConfig(identity, bytes.fromhex(key.strip()))
    async with DtlsUdpClient(("127.0.0.1", int(sys.argv[2])), identity, dtls=config, handshake_timeout=10):
        print(f"DTLS handshake as {identity} and MQTT-SN CONNECT accepted")
asyncio.run(main())
"""


def dtls_probe(plan: BuildPlan, rootfs: Path) -> None:
    """Read the effective gateway.dtls and gateway.psk_file from ``meshota up --print-config`` with
    the image's own arguments, then handshake and CONNECT there from inside the image."""
    shown = subprocess.run(
        in_image(rootfs, plan.user, plan.workdir, plan.env, [*plan.start_command, "--print-config"]),
        capture_output=True, text=True,
    )
    if shown.returncode != 0:
        raise Failed(f"--print-config exited {shown.returncode}: {shown.stderr.strip()}")
    gateway = tomllib.loads(shown.stdout)["gateway"]
    port = int(gateway["dtls"].rsplit(":", 1)[1])
    probe = in_image(rootfs, plan.user, plan.workdir, plan.env,
                     ["python3", "-c", DTLS_PROBE, gateway["psk_file"], str(port)])
    done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise Failed(f"udp/{port}: DTLS probe failed: {done.stderr.strip().splitlines()[-1:]}")
    log(f"run: udp/{port}: {done.stdout.strip()}")


def pid1(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """(host pid, command line) of the container's PID 1: the child `unshare --pid --fork` made,
    checked to be PID 1 in its namespace."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    if not children:
        raise Failed("the container's PID 1 is gone")
    pid = int(children[0])
    status = Path(f"/proc/{pid}/status").read_text()
    nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
    if nspid[-1] != "1":
        raise Failed(f"pid {pid} is not PID 1 in its namespace (NSpid {nspid})")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return pid, cmdline


def stop(proc: subprocess.Popen[bytes]) -> None:
    """`docker stop`: SIGTERM to the container's PID 1."""
    os.kill(pid1(proc)[0], signal.SIGTERM)


def processes_in(rootfs: Path) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "root") == str(rootfs):
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def run_container(plan: BuildPlan, rootfs: Path, logfile: Path, timeout: float) -> None:
    """In a fresh network and mount namespace: each VOLUME gets a fresh copy of the image's
    directory (what docker seeds a new named volume with), so the image itself stays unused."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for volume in plan.volumes:
        inside = rootfs / volume.lstrip("/")
        fresh = logfile.parent / "volumes-run" / volume.strip("/").replace("/", "_")
        subprocess.run(["cp", "-a", str(inside), str(fresh)], check=True)
        subprocess.run(["mount", "--bind", str(fresh), str(inside)], check=True)
    argv = plan.start_command
    log(f"run: {' '.join(argv)} as {plan.user} in a new network namespace")
    started = time.monotonic()
    with logfile.open("wb") as out:
        # its own PID namespace: the entrypoint is PID 1, as in `docker run` (no --init), where a
        # signal without a handler is ignored
        pid_ns = ["unshare", "--pid", "--fork", "--kill-child", "--"]
        proc = subprocess.Popen([*pid_ns, *in_image(rootfs, plan.user, plan.workdir, plan.env, argv)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        healthy = False
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise Failed(f"the entrypoint exited {proc.returncode} before it was healthy")
            if plan.healthcheck:
                check = in_image(rootfs, plan.user, plan.workdir, plan.env, plan.healthcheck)
                quiet = subprocess.DEVNULL
                healthy = subprocess.run(check, stdout=quiet, stderr=quiet).returncode == 0
            if healthy:
                break
            time.sleep(1.0)
        if not healthy:
            raise Failed(f"not healthy within {timeout:.0f} s")
        log(f"run: HEALTHCHECK passes after {time.monotonic() - started:.1f} s; PID 1 is `{pid1(proc)[1]}`")
        time.sleep(1.0)
        missing = [f"{p}/{proto}" for p, proto in plan.exposed if (p, proto) not in bound_ports()]
        if missing:
            raise Failed(f"EXPOSEd but not bound: {', '.join(missing)}")
        log(f"run: bound: {', '.join(f'{p}/{proto}' for p, proto in plan.exposed)}")
        answered = []
        for port, proto in plan.exposed:
            if proto == "udp":
                got = mqttsn_probe(port)
                if got is not None:
                    answered.append(port)
                    gwinfo, connack = got
                    log(f"run: udp/{port}: SEARCHGW -> GWINFO {gwinfo.hex()}, "
                        f"CONNECT -> CONNACK rc={connack[2]:#04x}")
        if not answered:
            raise Failed("no EXPOSEd UDP port answered SEARCHGW")
        dtls_probe(plan, rootfs)
    finally:
        stop_started = time.monotonic()
        if proc.poll() is None:
            stop(proc)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise Failed("the entrypoint did not stop within 30 s of SIGTERM") from None
        left = processes_in(rootfs)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        log(f"run: SIGTERM -> exit {proc.returncode} in {time.monotonic() - stop_started:.1f} s"
            + (f"; killed {len(left)} leftover processes" if left else ""))
    if proc.returncode != 0:
        raise Failed(f"`{' '.join(argv)}` exited {proc.returncode} on SIGTERM (expected 0)")
    if left:
        raise Failed(f"{len(left)} processes outlived the entrypoint")




def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/verify_container.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile")
    p.add_argument("--context", type=Path, default=ROOT)
    p.add_argument("--refresh-base", action="store_true", help="rebuild the cached base rootfs")
    p.add_argument("--keep", action="store_true", help="keep the built rootfs (its path is printed)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds the container may take to be healthy")
    p.add_argument("--build-ca", type=Path, default=os.environ.get("PIP_CERT") or None,
                   help="CA bundle pip in the RUN steps trusts (default: the host's PIP_CERT, if set)")
    p.add_argument("--compose", type=Path, nargs="?", const=ROOT / "compose.yaml", default=None,
                   help="then run compose.yaml's stack too (stand-ins for the mosquitto and postgres images)")
    p.add_argument("--run-stage", nargs=2, metavar=("ROOTFS", "LOG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    plan = plan_build(parse_dockerfile(args.dockerfile.read_text()))
    if args.run_stage:
        try:
            run_container(plan, Path(args.run_stage[0]), Path(args.run_stage[1]), args.timeout)
        except Failed as exc:
            log(f"FAILED: {exc}")
            return 1
        return 0
    if os.geteuid() != 0:
        print("verify_container: run as root (debootstrap, chroot, mount, unshare)", file=sys.stderr)
        return 2
    total = time.monotonic()
    work = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="meshota-verify."))
    # In memory when there is room (about 1.3 GB with --compose): unpacking, building and above
    # all removing ~100,000 files on disk took minutes on a loaded 2-core machine.
    in_memory = available_memory() >= 6 << 30 and not args.keep
    if in_memory:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "tmpfs", str(work)], check=True)
    rootfs = work / "rootfs"
    rootfs.mkdir()
    mounted: list[Path] = []
    try:
        tarball = base_rootfs(args.refresh_base)
        t = time.monotonic()
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tarball)], check=True)
        log(f"base rootfs: unpacked in {time.monotonic() - t:.1f} s")
        mounted = mount_runtime(rootfs)
        t = time.monotonic()
        steps = build(plan, rootfs, args.context.resolve(), args.build_ca)
        log(f"build: {len(plan.steps)} steps in {time.monotonic() - t:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()) + ")")
        check_image(plan, rootfs)
        t = time.monotonic()
        logfile = work / "entrypoint.log"
        (work / "volumes-run").mkdir()
        stage = ["unshare", "--net", "--mount", "--propagation", "private", "--", sys.executable, __file__,
                 "--dockerfile", str(args.dockerfile),
                 "--timeout", str(args.timeout), "--run-stage", str(rootfs), str(logfile)]
        done = subprocess.run(stage)
        log(f"run: {time.monotonic() - t:.1f} s; entrypoint output ({logfile}):")
        tail = logfile.read_text(errors="replace").splitlines()[-40:]
        sys.stdout.write("".join(f"    | {line}\n" for line in tail))
        if done.returncode != 0:
            raise Failed("the container run failed (above)")
        if args.compose:
            from verify_compose import postgres_rootfs

            t = time.monotonic()
            postgres_rootfs(tarball, work / "pg-rootfs")
            mounted += mount_runtime(work / "pg-rootfs")
            script = Path(__file__).with_name("verify_compose.py")
            stage = ["unshare", "--net", "--", sys.executable, str(script),
                     str(args.compose), str(args.dockerfile), str(rootfs), str(work / "pg-rootfs"), str(work),
                     str(args.timeout)]
            if subprocess.run(stage).returncode != 0:
                raise Failed("the compose stack failed (above)")
            log(f"compose: {time.monotonic() - t:.1f} s")
    except (Failed, subprocess.CalledProcessError) as exc:
        log(f"FAILED: {exc} (total {time.monotonic() - total:.0f} s)")
        return 1
    finally:
        t = time.monotonic()
        unmount(mounted)
        if args.keep:
            log(f"kept {work}")
        elif in_memory:
            subprocess.run(["umount", "-l", str(work)], check=False)
            work.rmdir()
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
            log(f"cleaned up {work} in {time.monotonic() - t:.0f} s")
    what = "image built and started" + (", compose stack run" if args.compose else "")
    log(f"OK: {what} in {time.monotonic() - total:.0f} s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
