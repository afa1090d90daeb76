"""The container files' shape, fast (scripts/verify_container.sh builds and starts the image for
real, under chroot, in minutes): the Dockerfile (bookworm-slim, the shared install script, a
non-root user, a volume, the healthcheck, `meshota up`), compose.yaml (meshota + mosquitto +
PostgreSQL wired by config, secrets only through files or the environment), and the Dockerfile
reader the verifier replays the build with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from meshota.up.config import load_config
from tests.support.dockerfile import (
    DEFAULT_PATH,
    CopyStep,
    DockerfileError,
    RunStep,
    context_files,
    parse_dockerfile,
    plan_build,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan() -> Any:
    return plan_build(parse_dockerfile((ROOT / "Dockerfile").read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ---- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_base_user_volume_entrypoint(plan: Any) -> None:
    assert plan.base == "debian:bookworm-slim"
    assert plan.user not in ("", "root", "0") and not plan.user.startswith(("root:", "0:"))
    useradds = [s.command for s in plan.steps if isinstance(s, RunStep) and "useradd" in s.command]
    assert useradds and plan.user in useradds[0].split()
    assert plan.volumes == ["/data"]
    assert plan.entrypoint[-2:] == ["meshota", "up"] or plan.entrypoint[-1].endswith("meshota up")
    assert plan.cmd[plan.cmd.index("--data") + 1] == "/data"


def test_dockerfile_healthcheck_and_ports_match_the_image_config(plan: Any) -> None:
    config_path = plan.cmd[plan.cmd.index("--config") + 1]
    copied = [s for s in plan.steps if isinstance(s, RunStep) and config_path in s.command]
    assert copied, f"no RUN step installs {config_path}"
    source = re.search(r"(deploy/\S+\.toml)\s+" + re.escape(config_path), copied[0].command)
    assert source is not None
    config = tomllib.loads((ROOT / source.group(1)).read_text())
    http = _port(config["http"]["listen"])
    assert config["http"]["listen"].startswith("0.0.0.0:")  # reachable from outside the container
    udp, dtls = _port(config["gateway"]["udp"]), _port(config["gateway"]["dtls"])
    assert set(plan.exposed) == {(http, "tcp"), (udp, "udp"), (dtls, "udp")}
    assert plan.healthcheck is not None
    assert f"http://127.0.0.1:{http}/healthz" in " ".join(plan.healthcheck)
    assert {"interval", "timeout", "start-period", "retries"} <= set(plan.healthcheck_options)


def test_dockerfile_and_setup_share_the_install_script(plan: Any) -> None:
    runs = " ".join(s.command for s in plan.steps if isinstance(s, RunStep))
    assert "install.sh packages" in runs and "install.sh venv" in runs
    assert "apt-get" not in runs and "pip " not in runs  # every install step is in the script
    setup = (ROOT / "scripts/setup.sh").read_text()
    assert "scripts/install.sh packages" in setup and "scripts/install.sh venv .venv" in setup
    # the venv is built by root, the service user only runs it
    venv_step = next(s for s in plan.steps if isinstance(s, RunStep) and "install.sh venv" in s.command)
    assert venv_step.user == "root"
    assert any(isinstance(s, RunStep) and s.user == plan.user for s in plan.steps)


def test_build_context_holds_the_package_and_no_secrets_or_venv() -> None:
    files = set(context_files(ROOT))
    assert {"pyproject.toml", "README.md", "scripts/install.sh", "deploy/image.toml"} <= files
    assert "meshota/cli/__init__.py" in files and "bridge/store/migrations/env.py" in files
    unwanted = (".venv/", ".git/", "tests/", "secrets/")
    assert not any(f.startswith(unwanted) or "__pycache__" in f for f in files)


# ---- the reader the verifier replays --------------------------------------------------------------


def test_reader_tracks_user_workdir_env_per_step() -> None:
    text = """# comment
FROM debian:bookworm-slim
ENV A=1 \\
    B="two words"
COPY --chown=app:app src /opt/
RUN echo one \\
    # a comment inside the continuation
    && echo two
USER app
WORKDIR /srv
ENV PATH=/x:$PATH
RUN id
ENTRYPOINT ["a"]
"""
    plan = plan_build(parse_dockerfile(text))
    copy, first, second = plan.steps
    assert isinstance(copy, CopyStep) and copy.chown == "app:app" and copy.dest == "/opt/"
    assert isinstance(first, RunStep) and first.command == "echo one && echo two"
    assert (first.user, first.workdir, first.env["B"]) == ("root", "/", "two words")
    assert isinstance(second, RunStep) and (second.user, second.workdir) == ("app", "/srv")
    assert second.env["PATH"] == f"/x:{DEFAULT_PATH}"
    assert plan.start_command == ["a"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("FROM debian:bookworm-slim\nADD x /x\n", "ADD"),
        ("FROM debian:bookworm-slim\nRUN <<EOF\necho\nEOF\n", "heredoc"),
        ("FROM a AS b\nFROM debian:bookworm-slim\n", "exactly one FROM"),
        ("FROM debian:bookworm-slim\nCOPY --from=b /x /y\n", "--from"),
        ("FROM debian:bookworm-slim\nENTRYPOINT meshota up\n", "exec form"),
        ("FROM debian:bookworm-slim\nRUN echo \\\n", "ends inside"),
    ],
)
def test_reader_refuses_what_it_cannot_replay(text: str, needle: str) -> None:
    with pytest.raises(DockerfileError, match=needle):
        plan_build(parse_dockerfile(text))


def test_dockerignore_rules(tmp_path: Path) -> None:
    for rel in ("a.py", "pkg/__pycache__/x.pyc", "pkg/m.py", "tests/t.py", "tests/keep.txt", ".venv/bin/p"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".dockerignore").write_text("# c\n.venv\n**/__pycache__\ntests\n!tests/keep.txt\n")
    assert list(context_files(tmp_path)) == [".dockerignore", "a.py", "pkg/m.py", "tests/keep.txt"]


# ---- compose.yaml -------------------------------------------------------------------------------


def test_compose_services_volumes_healthchecks(compose: dict[str, Any], plan: Any) -> None:
    services = compose["services"]
    assert {"meshota", "mosquitto", "postgres"} <= set(services)
    assert services["meshota"]["build"] == "."
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # meshota keeps the image's HEALTHCHECK (/healthz)
    assert plan.healthcheck and "disable" not in services["meshota"].get("healthcheck", {})
    depends = services["meshota"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy" and "mosquitto" in depends
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name}: volume {source} is not declared"
    assert any(v.split(":")[:2] == ["meshota-data", "/data"] for v in services["meshota"]["volumes"])
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])
    ports = {p.split(":")[-1] for p in services["meshota"]["ports"]}
    assert ports == {f"{p}/{proto}" for p, proto in plan.exposed}


def test_compose_points_meshota_at_its_broker_and_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    meshota = services["meshota"]
    command = meshota["command"]
    target = command[command.index("--config") + 1]
    config_ref = next(c for c in meshota["configs"] if c["target"] == target)
    config_file = compose["configs"][config_ref["source"]]["file"]
    config = tomllib.loads((ROOT / config_file).read_text())
    broker, db = urlsplit(config["broker"]["url"]), urlsplit(config["database"]["url"])
    assert broker.scheme == "mqtt" and broker.hostname == "mosquitto"
    assert db.scheme == "postgresql" and db.hostname == "postgres" and db.password is None
    env = services["postgres"]["environment"]
    assert db.username == env["POSTGRES_USER"] and db.path == "/" + env["POSTGRES_DB"]
    for key in ("gateway_password_file", "bridge_password_file"):
        assert config["broker"][key].startswith("/broker/")
    assert any(v.split(":")[:2] == ["broker", "/broker"] for v in meshota["volumes"])
    admin_file = config["admin"]["password_file"]
    assert admin_file.startswith("/run/secrets/") and admin_file.rsplit("/", 1)[1] in meshota["secrets"]
    mosquitto_conf = (ROOT / compose["configs"]["mosquitto_conf"]["file"]).read_text()
    assert "listener 1883" in mosquitto_conf and "include_dir /data" in mosquitto_conf


SECRETISH = re.compile(r"(?i)pass(word)?|secret|token|private_key")
ASSIGNMENT = re.compile(r"(?i)\b\w*(?:PASSWORD|SECRET|TOKEN)\w*=")


def test_compose_has_no_secret_literal(compose: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert not re.search(r"://[^/\s:@]+:[^@\s/]+@", text), "a URL with a password"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRETISH.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
        for field in ("command", "entrypoint"):
            words = service.get(field) or []
            line = " ".join(words) if isinstance(words, list) else str(words)
            assert not re.search(r"--[\w-]*password(?![\w-]*-(file|env))[ =]", line), (name, line)
            for match in ASSIGNMENT.finditer(line):  # a secret variable is set from a secret file only
                assert line[match.end() :].startswith('"$$(cat /run/secrets/'), (name, line)
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), name
    assert "secrets" in (ROOT / ".dockerignore").read_text().split()
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("name", ["image.toml", "compose.toml"])
def test_deploy_configs_pass_meshota_up_validation(name: str, tmp_path: Path) -> None:
    # every key checked the way `meshota up --config` checks it at start (unknown key: exit 2)
    loaded = load_config(ROOT / "deploy" / name, tmp_path)
    assert loaded.get("http", "listen").startswith("0.0.0.0:")
    assert loaded.get("gateway", "udp").startswith("0.0.0.0:")
