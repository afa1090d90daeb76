"""compose.yaml's stack without docker: ``scripts/verify_container.sh --compose`` builds the image
(scripts/verify_container.py), then this runs every service of compose.yaml as compose would —
in depends_on order, each in its own mount namespace over a chroot with its named volumes (seeded
from the image like docker seeds an empty volume), configs and secrets bind-mounted, its
entrypoint/command/user/environment read from compose.yaml — all in one fresh network namespace
where the service names resolve to 127.0.0.1 (compose's DNS). Then: meshota's HEALTHCHECK, the
admin logs in with the password from the secret file, meshota's tables are in PostgreSQL, an
MQTT-SN CONNECT on UDP is accepted (the gateway authenticated to mosquitto with the password file
broker-setup wrote), a DTLS handshake + CONNECT, and every service stops on SIGTERM.

Two images are stand-ins, as no registry image can be pulled without docker: ``eclipse-mosquitto``
runs Debian's mosquitto (2.0.11, from the meshota image) with that image's command line, and
``postgres`` runs Debian's postgresql-15 (rootfs cached under /var/cache/meshota) behind a small
emulation of the official entrypoint (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE, scram
for TCP clients). Only the compose.yaml features the file uses are understood; anything else is
an error, not a skipped line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from verify_container import (
    CACHE,
    DTLS_PROBE,
    Failed,
    in_image,
    log,
    mount_runtime,
    mqttsn_probe,
    processes_in,
    stop,
    unmount,
)

from tests.support.dockerfile import BuildPlan, parse_dockerfile, plan_build

KNOWN_KEYS = {"image", "build", "entrypoint", "command", "user", "environment", "volumes", "configs",
              "secrets", "depends_on", "healthcheck", "ports", "restart", "stop_grace_period"}
MOSQUITTO_CMD = ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
POSTGRES_ENTRYPOINT = r"""
set -e
bin=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/data
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_pg "$bin/pg_ctl" -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
    as_pg "$bin/psql" -q -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    as_pg "$bin/pg_ctl" -D "$PGDATA" -w stop >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" \
    -c listen_addresses='*'
"""


def postgres_rootfs(base_tarball: Path, into: Path) -> None:
    """Debian's postgresql-15 in a bookworm rootfs (cached as a tarball after the first time)."""
    tarball = CACHE / "bookworm-postgresql15-rootfs.tar"
    into.mkdir(parents=True)
    if tarball.exists():
        subprocess.run(["tar", "-C", str(into), "--numeric-owner", "-xpf", str(tarball)], check=True)
        log(f"postgres stand-in: cached {tarball}")
        return
    started = time.monotonic()
    subprocess.run(["tar", "-C", str(into), "--numeric-owner", "-xpf", str(base_tarball)], check=True)
    mounted = mount_runtime(into)
    try:
        conf = into / "etc/postgresql-common/createcluster.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("create_main_cluster = false\n")
        subprocess.run(["chroot", str(into), "/bin/sh", "-c",
                        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                        "--no-install-recommends postgresql-15 >/dev/null && rm -rf /var/lib/apt/lists/*"],
                       check=True)
    finally:
        unmount(mounted)
    subprocess.run(["tar", "-C", str(into), "--numeric-owner", "-cf", str(tarball), "."], check=True)
    log(f"postgres stand-in: postgresql-15 installed and cached in {time.monotonic() - started:.0f} s")


def unescape(value: str) -> str:
    """Compose interpolation: ``$$`` is a literal ``$``; a variable is not supported here."""
    if "$" in value.replace("$$", ""):
        raise Failed(f"compose variable interpolation is not supported: {value!r}")
    return value.replace("$$", "$")


def argv_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return shlex.split(unescape(value))
    return [unescape(str(v)) for v in value]


@dataclass
class Service:
    name: str
    rootfs: Path
    argv: list[str]
    user: str
    workdir: str
    env: dict[str, str]
    binds: list[tuple[Path, str, bool]] = field(default_factory=list)  # host, in-container, read-only
    healthcheck: list[str] | None = None
    proc: subprocess.Popen[bytes] | None = None


class Stack:
    def __init__(self, compose_file: Path, plan: BuildPlan, image: Path, pg: Path, work: Path) -> None:
        self.doc = yaml.safe_load(compose_file.read_text())
        self.base = compose_file.parent
        self.plan, self.image, self.pg, self.work = plan, image, pg, work
        self.secrets_dir = work / "secrets"
        self.services: dict[str, Service] = {}

    def secret_file(self, name: str) -> Path:
        """The host file of a compose secret; generated (random, 0644) as README.md says."""
        spec = self.doc["secrets"][name]
        path = self.secrets_dir / Path(spec["file"]).name
        if not path.exists():
            self.secrets_dir.mkdir(exist_ok=True)
            path.write_text(secrets.token_hex(24) + "\n")
            path.chmod(0o644)
        return path

    def volume(self, name: str, rootfs: Path, target: str) -> Path:
        if name not in (self.doc.get("volumes") or {}):
            raise Failed(f"volume {name!r} is not declared")
        path = self.work / "volumes" / name
        if not path.exists():  # docker seeds an empty named volume from the image's directory
            source = rootfs / target.lstrip("/")
            if source.is_dir():
                shutil.copytree(source, path, symlinks=True)
                st = source.stat()
                os.chown(path, st.st_uid, st.st_gid)
                path.chmod(st.st_mode & 0o7777)
            else:
                path.mkdir(parents=True)
        return path

    def build(self, name: str, spec: dict[str, Any]) -> Service:
        unknown = set(spec) - KNOWN_KEYS
        if unknown:
            raise Failed(f"service {name}: keys the verifier does not understand: {sorted(unknown)}")
        image = spec.get("image", "")
        env: dict[str, str]
        if spec.get("build") == "." or image.startswith("meshota"):
            rootfs, env, user, workdir = self.image, dict(self.plan.env), self.plan.user, self.plan.workdir
            entry, cmd, health = self.plan.entrypoint, self.plan.cmd, self.plan.healthcheck
        elif image.startswith("eclipse-mosquitto:2"):
            rootfs, env, user, workdir = self.image, {"PATH": self.plan.env["PATH"]}, "root", "/"
            entry, cmd, health = [], MOSQUITTO_CMD, None
        elif image.startswith("postgres:15"):
            rootfs, user, workdir = self.pg, "root", "/"
            env = {"PATH": "/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
            entry, cmd, health = ["/bin/sh", "-c", POSTGRES_ENTRYPOINT], [], None
        else:
            raise Failed(f"service {name}: no stand-in for image {image!r}")
        if "entrypoint" in spec:
            entry, cmd = argv_of(spec["entrypoint"]), []
        if "command" in spec:
            cmd = argv_of(spec["command"])
        env.update({k: unescape(str(v)) for k, v in (spec.get("environment") or {}).items()})
        service = Service(name, rootfs, [*entry, *cmd], spec.get("user", user), workdir, env)
        for volume in spec.get("volumes", []):
            source, target, *mode = volume.split(":")
            service.binds.append((self.volume(source, rootfs, target), target, mode == ["ro"]))
        for config in spec.get("configs", []):
            file = self.base / self.doc["configs"][config["source"]]["file"]
            service.binds.append((file.resolve(), config["target"], True))
        for secret in spec.get("secrets", []):
            service.binds.append((self.secret_file(secret), f"/run/secrets/{secret}", True))
        check = spec.get("healthcheck") or {}
        if check.get("disable"):
            health = None
        elif "test" in check:
            test = check["test"]
            health = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        service.healthcheck = health
        return service

    def command(self, service: Service, argv: list[str]) -> list[str]:
        """The host command running ``argv`` in ``service``'s container: its own mount namespace
        with its binds, then chroot as its user."""
        lines = ["set -e"]
        for host, target, ro in service.binds:
            mountpoint = service.rootfs / target.lstrip("/")
            if host.is_dir():
                mountpoint.mkdir(parents=True, exist_ok=True)
            else:
                mountpoint.parent.mkdir(parents=True, exist_ok=True)
                mountpoint.touch(exist_ok=True)
            lines.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(str(mountpoint))}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(str(mountpoint))}")
        inner = in_image(service.rootfs, service.user, service.workdir, service.env, argv)
        lines.append("exec " + shlex.join(inner))
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines)]

    def start(self, service: Service) -> None:
        """Its own PID namespace too: the entrypoint ends up PID 1, as in a container."""
        logfile = (self.work / "logs" / f"{service.name}.log")
        logfile.parent.mkdir(exist_ok=True)
        unshare = self.command(service, service.argv)
        argv = [*unshare[:1], "--pid", "--fork", "--kill-child", *unshare[1:]]
        with logfile.open("ab") as out:
            service.proc = subprocess.Popen(argv, stdout=out, stderr=out)
        log(f"compose: {service.name} started: {shlex.join(service.argv)[:100]} as {service.user}")

    def run(self, service: Service, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(service, argv), capture_output=True, text=True, timeout=timeout)

    def wait_for(self, name: str, condition: str, deadline: float) -> None:
        service = self.services[name]
        assert service.proc is not None
        while time.monotonic() < deadline:
            code = service.proc.poll()
            if condition == "service_completed_successfully":
                if code is not None:
                    if code != 0:
                        raise Failed(f"{name} exited {code}")
                    return
            elif code is not None:
                raise Failed(f"{name} exited {code} while others wait for it")
            elif condition == "service_started":
                return
            elif service.healthcheck is None:
                raise Failed(f"{name}: service_healthy needs a healthcheck")
            elif self.run(service, service.healthcheck).returncode == 0:
                return
            time.sleep(1.0)
        raise Failed(f"{name} not {condition} in time")

    def up(self, timeout: float) -> None:
        hosts = "".join(f"127.0.0.1\t{n}\n" for n in self.doc["services"])
        for rootfs in {self.image, self.pg}:
            (rootfs / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n" + hosts)
        pending = dict(self.doc["services"])
        deadline = time.monotonic() + timeout
        while pending:
            ready = [n for n, s in pending.items() if not set(s.get("depends_on") or {}) & set(pending)]
            if not ready:
                raise Failed(f"depends_on cycle among {sorted(pending)}")
            for name in ready:
                spec = pending.pop(name)
                for dep, how in (spec.get("depends_on") or {}).items():
                    self.wait_for(dep, how["condition"], deadline)
                service = self.services[name] = self.build(name, spec)
                self.start(service)

    def down(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.services)):
            proc = self.services[name].proc
            if proc is None:
                continue
            if proc.poll() is None:
                stop(proc)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            codes[name] = proc.returncode
        for rootfs in (self.image, self.pg):
            for pid in processes_in(rootfs):
                os.kill(pid, signal.SIGKILL)
        return codes


def check_stack(stack: Stack) -> None:
    meshota = stack.services["meshota"]
    shown = stack.run(meshota, [*meshota.argv, "--print-config"])
    if shown.returncode != 0:
        raise Failed(f"meshota --print-config exited {shown.returncode}: {shown.stderr.strip()}")
    config = tomllib.loads(shown.stdout)
    if not config["database"]["url"].startswith("postgresql://"):
        raise Failed(f"meshota is not on PostgreSQL: {config['database']['url']}")
    http = int(config["http"]["listen"].rsplit(":", 1)[1])
    user = config["admin"]["username"]
    password_file = next(h for h, t, _ in meshota.binds if t == config["admin"]["password_file"])
    token = base64.b64encode(f"{user}:{password_file.read_text().strip()}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{http}/api/management/v1/useradm/auth/login",
                                     method="POST", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        if answer.status != 200:
            raise Failed(f"admin login: HTTP {answer.status}")
    log(f"compose: admin {user} logs in with the password from the secret file")
    postgres = stack.services["postgres"]
    tables = stack.run(postgres, ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                                  "psql", "-At", "-U", postgres.env["POSTGRES_USER"], "-d",
                                  postgres.env["POSTGRES_DB"], "-c",
                                  "select count(*) from information_schema.tables"
                                  " where table_schema='public'"])
    if tables.returncode != 0 or int(tables.stdout.strip() or 0) == 0:
        raise Failed(f"no meshota tables in PostgreSQL: {tables.stdout.strip()} {tables.stderr.strip()}")
    log(f"compose: {tables.stdout.strip()} tables in PostgreSQL database {postgres.env['POSTGRES_DB']}")
    udp = int(config["gateway"]["udp"].rsplit(":", 1)[1])
    got = mqttsn_probe(udp)
    if got is None or got[1][2] != 0:
        raise Failed(f"udp/{udp}: no CONNACK rc=0 through mosquitto: {got}")
    log(f"compose: udp/{udp}: SEARCHGW -> GWINFO, CONNECT -> CONNACK rc=0"
        " (the gateway authenticated to mosquitto)")
    dtls = int(config["gateway"]["dtls"].rsplit(":", 1)[1])
    probe = stack.run(meshota, ["python3", "-c", DTLS_PROBE, config["gateway"]["psk_file"], str(dtls)])
    if probe.returncode != 0:
        raise Failed(f"udp/{dtls}: DTLS probe failed: {probe.stderr.strip().splitlines()[-1:]}")
    log(f"compose: udp/{dtls}: {probe.stdout.strip()}")


def main() -> int:
    compose_file, dockerfile, image, pg, work = (Path(a) for a in sys.argv[1:6])
    timeout = float(sys.argv[6])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    plan = plan_build(parse_dockerfile(dockerfile.read_text()))
    stack = Stack(compose_file, plan, image, pg, work)
    started = time.monotonic()
    failed: str | None = None
    try:
        stack.up(timeout)
        stack.wait_for("meshota", "service_healthy", time.monotonic() + timeout)
        log(f"compose: every service up, meshota healthy after {time.monotonic() - started:.1f} s")
        check_stack(stack)
    except (Failed, subprocess.TimeoutExpired, OSError) as exc:
        failed = str(exc)
    finally:
        codes = stack.down()
        log(f"compose: stopped, exit statuses {json.dumps(codes)}")
        for logfile in sorted((work / "logs").glob("*.log")):
            tail = logfile.read_text(errors="replace").splitlines()[-12:]
            sys.stdout.write(f"    {logfile.stem}:\n" + "".join(f"    | {line}\n" for line in tail))
    if failed is None and codes.get("meshota") != 0:
        failed = f"meshota exited {codes.get('meshota')} on SIGTERM (expected 0)"
    if failed is not None:
        log(f"compose: FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
